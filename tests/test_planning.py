"""Pure planning and status: literals in, plans out, no database."""

from __future__ import annotations

from pathlib import Path

from archify_core.migration import Migration, MigrationSet, Scope
from archify_core.planning import (
    LedgerShape,
    SchemaState,
    drift_of,
    plan_schema,
    rollback_problem,
)
from archify_core.status import schema_status, schema_statuses


def _m(version: str, scope: Scope, sql: str = "SELECT 1") -> Migration:
    return Migration(version, scope, version, Path(f"{version}.py"), sql)


MIGRATIONS = MigrationSet([
    _m("001_public", Scope.PUBLIC), _m("002_tenant", Scope.TENANT),
    _m("003_tenant", Scope.TENANT), _m("004_both", Scope.BOTH),
])


def _tenant(applied: dict[str, str | None], **kw: object) -> SchemaState:
    return SchemaState("tenant_acme", Scope.TENANT, slug="acme", applied=applied, **kw)


def _checksum(version: str) -> str:
    migration = MIGRATIONS.get(version)
    assert migration is not None
    return migration.checksum


def test_public_gets_public_and_both_in_filename_order() -> None:
    plan = plan_schema(MIGRATIONS, SchemaState("public", Scope.PUBLIC))
    assert [m.version for m in plan.pending] == ["001_public", "004_both"]


def test_tenant_gets_what_it_has_not_applied() -> None:
    plan = plan_schema(MIGRATIONS, _tenant({"002_tenant": _checksum("002_tenant")}))
    assert [m.version for m in plan.pending] == ["003_tenant", "004_both"]
    assert plan.has_work and plan.blocked is None


def test_up_to_date_has_no_work() -> None:
    applied = {v: _checksum(v) for v in ("002_tenant", "003_tenant", "004_both")}
    plan = plan_schema(MIGRATIONS, _tenant(applied))
    assert plan.pending == () and not plan.has_work


def test_missing_schema_blocks_with_a_reason() -> None:
    plan = plan_schema(MIGRATIONS, _tenant({}, exists=False, ledger=LedgerShape.MISSING))
    assert not plan.has_work
    assert "tenant_acme does not exist" in plan.blocked


def test_registry_problem_blocks_even_without_pending_work() -> None:
    applied = {v: _checksum(v) for v in ("002_tenant", "003_tenant", "004_both")}
    plan = plan_schema(MIGRATIONS, _tenant(applied, problem="tampered"))
    assert plan.blocked == "tampered"


def test_out_of_order_file_blocks_unless_allowed() -> None:
    state = _tenant({"002_tenant": None, "004_both": None})
    plan = plan_schema(MIGRATIONS, state)
    assert plan.blocked is not None and "003_tenant is older than 004_both" in plan.blocked
    assert "--allow-out-of-order" in plan.blocked
    allowed = plan_schema(MIGRATIONS, state, allow_out_of_order=True)
    assert [m.version for m in allowed.pending] == ["003_tenant"] and allowed.has_work


def test_drift_finds_edited_and_missing_files() -> None:
    state = _tenant({"002_tenant": "not-the-checksum", "003_tenant": None, "009_gone": "x"})
    drift = drift_of(MIGRATIONS, state)
    assert drift.edited == ("002_tenant",)  # 003 was applied before checksums: not drift
    assert drift.missing_files == ("009_gone",)
    status = schema_status(MIGRATIONS, state)
    assert status.to_dict()["drift"]["missing_files"] == ["009_gone"]
    assert status.pending == ("004_both",)


def test_status_shape_matches_the_json_contract() -> None:
    status = schema_status(MIGRATIONS, _tenant({"002_tenant": _checksum("002_tenant")}))
    assert status.to_dict() == {
        "slug": "acme", "schema": "tenant_acme", "applied": ["002_tenant"],
        "pending": ["003_tenant", "004_both"],
    }


def test_a_rollback_target_must_exist_and_apply_to_the_scope() -> None:
    migrations = MigrationSet([_m("001_p", Scope.PUBLIC), _m("002_t", Scope.TENANT),
                               _m("003_b", Scope.BOTH)])
    assert rollback_problem(migrations, Scope.TENANT, to="002_t", steps=None) is None
    assert rollback_problem(migrations, Scope.TENANT, to="003_b", steps=None) is None
    assert rollback_problem(migrations, Scope.PUBLIC, to=None, steps=2) is None
    assert "not applied to tenant schemas" in str(
        rollback_problem(migrations, Scope.TENANT, to="001_p", steps=None))
    assert "not applied to public schemas" in str(
        rollback_problem(migrations, Scope.PUBLIC, to="002_t", steps=None))
    assert "no migration file" in str(
        rollback_problem(migrations, Scope.TENANT, to="009_x", steps=None))
    assert "exactly one" in str(rollback_problem(migrations, Scope.TENANT, to="002_t", steps=1))
    assert "at least 1" in str(rollback_problem(migrations, Scope.TENANT, to=None, steps=0))


def test_statuses_of_alike_ledgers_are_each_schemas_own() -> None:
    current = {"002_tenant": _checksum("002_tenant")}
    edited = {"002_tenant": "not-the-checksum"}
    states = [
        SchemaState("tenant_a", Scope.TENANT, slug="a", applied=dict(current)),
        SchemaState("tenant_b", Scope.TENANT, slug="b", applied=dict(edited)),
        SchemaState("tenant_c", Scope.TENANT, slug="c", applied=dict(current)),
        SchemaState("tenant_d", Scope.TENANT, slug="d", applied=dict(current), exists=False),
        SchemaState("tenant_e", Scope.TENANT, slug="e", applied=dict(edited)),
    ]
    statuses = schema_statuses(MIGRATIONS, states)
    # planned once per distinct ledger, yet every status is the one planned alone
    assert statuses == [schema_status(MIGRATIONS, s) for s in states]
    assert [(s.schema, s.slug) for s in statuses] == [
        ("tenant_a", "a"), ("tenant_b", "b"), ("tenant_c", "c"), ("tenant_d", "d"),
        ("tenant_e", "e")]
    assert statuses[4].drift.edited == ("002_tenant",) and not statuses[2].drift
    assert statuses[3].problem is not None and "tenant_d" in statuses[3].problem
