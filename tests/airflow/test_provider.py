"""The provider as Airflow sees it: entry point, DAG import, hook DSNs, operators
against a real database. Pure helpers (shards, report merging) are tested with literals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from archify_airflow import get_provider_info
from archify_airflow.reports import MAX_NAMED_FAILURES, describe_failures, merge_reports
from archify_airflow.sharding import (
    choose_canaries,
    plan_shards,
    select_tenants,
    shard,
)
from archify_core import Engine, TenantNotFoundError

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"

# -- Airflow accepts the provider and the DAG ------------------------------------------------


def test_provider_is_registered_through_its_entry_point(airflow_db: None) -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManager().providers["archify"].data["name"] == "Archify"
    hook = ProvidersManagerTaskRuntime().hooks["archify"]
    assert hook is not None
    assert hook.hook_class_name == "archify_airflow.hooks.ArchifyHook"
    assert get_provider_info()["package-name"] == "archify"


def test_example_dag_imports_without_errors(airflow_db: None) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    dag = bag.get_dag("archify_fleet_rollout")
    assert set(dag.task_ids) == {"status", "migrate_public", "migrate_canary", "shard_tenants",
                                 "migrate_shard", "summary", "drift_check"}
    assert set(dag.params) >= {"tenants", "canary", "shard_size", "dry_run", "migrations",
                               "conn_id"}


# -- the hook ---------------------------------------------------------------------------


def dsn_of(uri: str) -> str:
    from airflow.sdk import Connection

    from archify_airflow.hooks import connection_to_dsn

    return connection_to_dsn(Connection.from_uri(uri, conn_id="x"))


@pytest.mark.parametrize(("uri", "dsn"), [
    ("postgresql://app:secret@db.example.com:6543/prod",
     "postgresql://app:secret@db.example.com:6543/prod"),
    ("postgresql://postgres:@/archify?host=/tmp/pg%20dir",
     "postgresql://postgres@/archify?host=/tmp/pg%20dir"),
    ("postgres://u@%2Frun%2Fpostgresql:5433/db",
     "postgresql://u@/db?host=/run/postgresql&port=5433"),
    ("postgresql://us%40er:p%3Aw%2Fd%20x@db/app?sslmode=require&cursor=dictcursor",
     "postgresql://us%40er:p%3Aw%2Fd%20x@db/app?sslmode=require"),
])
def test_connection_becomes_a_dsn(airflow_db: None, uri: str, dsn: str) -> None:
    assert dsn_of(uri) == dsn


def test_hook_connects_over_the_unix_socket_from_an_env_connection(archify_conn: str) -> None:
    from archify_airflow.hooks import ArchifyHook

    hook = ArchifyHook()
    assert "?host=/" in hook.get_dsn()
    assert hook.test_connection() == (True, "Connection successfully tested")


# -- operators driven directly (execute) against a real database -------------------------


def tenant_ledger(dsn: str, schema: str) -> list[str]:
    async def main() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations'
                                    " ORDER BY version")
            return [r["version"] for r in rows]
        finally:
            await conn.close()

    return anyio.run(main)


def test_create_tenant_then_roll_it_back_one_step(
    archify_conn: str, migrations_dir: Path
) -> None:
    from archify_airflow.operators import (
        ArchifyCreateTenantOperator,
        ArchifyMigrateOperator,
        ArchifyRollbackOperator,
    )

    common: dict[str, Any] = {"migrations": str(migrations_dir)}
    ArchifyMigrateOperator(task_id="public", target="public", **common).execute({})
    created = ArchifyCreateTenantOperator(task_id="create", slug="acme", **common).execute({})
    assert created == {"slug": "acme", "schema": "tenant_acme", "name": "acme", "created": True}
    again = ArchifyCreateTenantOperator(task_id="again", slug="acme", if_not_exists=True,
                                        **common).execute({})
    assert again == {"slug": "acme", "created": False}
    assert tenant_ledger(archify_conn, "tenant_acme") == [
        "002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]

    report = ArchifyRollbackOperator(task_id="rollback", target=["acme"], steps=1,
                                     **common).execute({})

    assert report["ok"] is True
    assert report["summary"]["rolled_back"] == 1
    assert tenant_ledger(archify_conn, "tenant_acme") == [
        "002_create_tenant_tables", "003_add_user_avatar"]


def test_migrate_operator_fails_after_finishing_the_others(
    archify_conn: str, migrations_dir: Path
) -> None:
    from archify_airflow.operators import ArchifyMigrateOperator, ArchifyRolloutFailed

    async def setup() -> None:
        async with Engine(archify_conn, migrations=migrations_dir) as engine:
            await engine.migrate("public")
            for slug in ("a1", "b2", "c3"):
                await engine.create_tenant(slug, migrate=False)
        conn = await asyncpg.connect(archify_conn)
        await conn.execute("CREATE TABLE tenant_b2.users (id int)")
        await conn.close()

    anyio.run(setup)
    pushed: dict[str, Any] = {}

    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    operator = ArchifyMigrateOperator(task_id="m", target="tenants",
                                      migrations=str(migrations_dir))
    with pytest.raises(ArchifyRolloutFailed,
                       match=r"^database archify_default: 1 schema\(s\) failed: tenant_b2 \(002_"):
        operator.execute({"ti": TI()})

    assert list(pushed["return_value"]["failed"]) == ["tenant_b2"]
    assert pushed["return_value"]["migrated"] == ["tenant_a1", "tenant_c3"]
    assert tenant_ledger(archify_conn, "tenant_a1")[-1] == "005_add_audit_logs"
    assert tenant_ledger(archify_conn, "tenant_b2") == []


def test_configuration_errors_fail_the_task_without_retries(
    archify_conn: str, migrations_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from archify_airflow.operators import ArchifyMigrateOperator, ArchifyRollbackOperator

    async def setup() -> None:
        async with Engine(archify_conn, migrations=migrations_dir) as engine:
            await engine.migrate("public")
            await engine.create_tenant("a1", migrate=False)

    anyio.run(setup)
    # migrations=None (an empty DAG param): the worker's ARCHIFY_MIGRATIONS is used.
    monkeypatch.setenv("ARCHIFY_MIGRATIONS", str(migrations_dir))

    typo = ArchifyMigrateOperator(task_id="m", tenants=["a1", "nope"], migrations=None)
    with pytest.raises(AirflowFailException, match="nope") as caught:
        typo.execute({})
    assert isinstance(caught.value.__cause__, TenantNotFoundError)
    assert tenant_ledger(archify_conn, "tenant_a1") == []

    everything = ArchifyRollbackOperator(task_id="r", target="all", steps=1, max_failures="2")
    assert "max_failures" in everything.template_fields
    with pytest.raises(AirflowFailException, match="rollback one scope at a time"):
        everything.execute({})
    assert tenant_ledger(archify_conn, "tenant_a1") == []

    for bad in ({"concurrency": "many"}, {"max_failures": "2x"}):
        name = next(iter(bad))
        with pytest.raises(AirflowFailException, match=f"{name} must be a whole number"):
            ArchifyMigrateOperator(task_id="bad", tenants="a1", **bad).execute({})
    assert tenant_ledger(archify_conn, "tenant_a1") == []

    # a rendered empty param ("None") is the default: the engine sizes the concurrency
    ArchifyMigrateOperator(task_id="ok", tenants="a1", max_failures="None",
                           concurrency="None").execute({})
    assert tenant_ledger(archify_conn, "tenant_a1")[-1] == "005_add_audit_logs"


# -- pure helpers -------------------------------------------------------------------------


def test_shards_are_consecutive_and_the_last_is_shorter() -> None:
    slugs = [f"t{i}" for i in range(7)]
    assert shard(slugs, 3) == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    assert shard([], 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        shard(slugs, 0)


def test_selection_filters_excludes_and_rejects_unknown_tenants() -> None:
    registered = ["a", "b", "c", "d"]
    assert select_tenants(registered, exclude=["b"]) == ["a", "c", "d"]
    assert select_tenants(registered, only=["d", "a", "c"], exclude=["c"]) == ["a", "d"]
    with pytest.raises(TenantNotFoundError, match="not registered in public.tenants: x, y"):
        select_tenants(registered, only=["a", "y", "x"])


def test_merging_reports_adds_counts_timings_and_counts_missing_ones() -> None:
    def report(migrated: list[str], failed: dict[str, Any], ms: float) -> dict[str, Any]:
        return {"summary": {"schemas": len(migrated) + len(failed), "applied": len(migrated),
                            "migrated": len(migrated), "failed": len(failed)},
                "migrated": migrated, "failed": failed, "duration_s": 1.0,
                "timings": {"002": {"schemas": len(migrated), "total_ms": ms, "max_ms": ms}}}

    boom = {"tenant_c": {"version": "002", "message": "boom"}}
    merged = merge_reports([report(["tenant_a"], {}, 4.0), report(["tenant_b"], boom, 8.0), None])

    assert merged["ok"] is False
    assert merged["missing_reports"] == 1
    assert merged["outcomes"]["migrated"] == 2 and merged["outcomes"]["failed"] == 1
    assert merged["migrated"] == ["tenant_a", "tenant_b"]
    assert merged["timings"]["002"] == {"schemas": 2, "total_ms": 12.0, "max_ms": 8.0,
                                        "mean_ms": 6.0}
    assert merged["task_seconds"] == 2.0  # summed over tasks: worker time, not wall time
    assert describe_failures(merged["failed"]) == "1 schema(s) failed: tenant_c (002: boom)"
    assert merge_reports([report([], {}, 0.0)])["ok"] is True


def test_merged_summary_names_at_most_the_first_few_and_counts_the_rest() -> None:
    n = MAX_NAMED_FAILURES
    shards = [{"summary": {"schemas": 2 * n, "migrated": n, "failed": n},
               "migrated": [f"m{k}_{i}" for i in range(n)],
               "failed": {f"f{k}_{i}": {"version": "002", "message": "boom"} for i in range(n)}}
              for k in range(3)]

    merged = merge_reports(shards)

    assert merged["outcomes"]["migrated"] == 3 * n and merged["outcomes"]["failed"] == 3 * n
    assert merged["migrated"] == [f"m0_{i}" for i in range(n)]
    assert list(merged["failed"]) == [f"f0_{i}" for i in range(n)]
    assert merged["left_out"] == {"migrated": 2 * n, "failed": 2 * n, "skipped": 0}
    assert merged["ok"] is False
    message = describe_failures(merged["failed"], merged["left_out"]["failed"])
    assert message.startswith(f"{3 * n} schema(s) failed: f0_0 (002: boom)")
    assert message.endswith(f"; and {2 * n} more")


@pytest.mark.parametrize(("conn_id", "uri", "expected"), [
    ("archify_nowhere", None, "connection 'archify_nowhere' is not defined"),
    ("archify_refused", "postgresql://u:secret@127.0.0.1:9/db",
     "connection 'archify_refused': cannot connect to postgresql://u:***@127.0.0.1:9/db"),
])
def test_a_bad_connection_is_one_error_naming_it(
    airflow_db: None, monkeypatch: pytest.MonkeyPatch, conn_id: str, uri: str | None,
    expected: str,
) -> None:
    from archify_airflow.operators import ArchifyStatusOperator

    if uri:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    operator = ArchifyStatusOperator(task_id="status", archify_conn_id=conn_id)
    with pytest.raises(Exception) as raised:
        operator.run_engine(lambda engine: engine.status())
    assert str(raised.value).startswith(expected)
    assert "secret" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_drift_operator_names_drifted_tenants_or_reports_all_alike(
    archify_conn: str, migrations_dir: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from archify_airflow.operators import ArchifyDriftOperator, ArchifyMigrateOperator
    from tests.fleet import execute, migrated_fleet

    anyio.run(migrated_fleet, archify_conn, migrations_dir, ["acme", "bravo", "corp"])
    common: dict[str, Any] = {"migrations": str(migrations_dir)}
    alike = ArchifyDriftOperator(task_id="drift", **common).execute({})
    assert alike["ok"] is True and alike["alike_count"] == 3 and alike["drifted"] == []

    anyio.run(execute, archify_conn, "CREATE INDEX idx_users_email ON tenant_acme.users(email)")
    with pytest.raises(AirflowFailException, match="1 tenant.*tenant_acme"):
        ArchifyDriftOperator(task_id="drift", **common).execute({})
    reported = ArchifyDriftOperator(task_id="drift", fail_on_drift=False, **common).execute({})
    assert reported["drifted"] == ["tenant_acme"]
    assert reported["groups"] == ["tenant_acme: extra index idx_users_email on users(email)"]
    # the check changed nothing: a rollout still finds nothing pending
    report = ArchifyMigrateOperator(task_id="m", target="all", **common).execute({})
    assert report["ok"] is True



# -- several databases -------------------------------------------------------------------


def test_fleet_plans_shard_each_database_apart_and_choose_canaries_in_each() -> None:
    registered = {"eu": ["a", "b", "c", "d", "e"], "us": ["f", "g", "h"]}
    assert choose_canaries(registered, ["g"], 1) == ["g", "a", "f"]
    assert choose_canaries(registered, [], 2, only=["b", "c", "d", "h"]) == ["b", "c", "h"]
    with pytest.raises(TenantNotFoundError, match="canary.*: zz"):
        choose_canaries(registered, ["zz"])
    assert plan_shards(registered, 2, exclude=["a", "f"]) == [
        {"archify_conn_id": "eu", "tenants": ["b", "c"]},
        {"archify_conn_id": "eu", "tenants": ["d", "e"]},
        {"archify_conn_id": "us", "tenants": ["g", "h"]},
    ]
    assert plan_shards(registered, 10, only=["e", "h"]) == [
        {"archify_conn_id": "eu", "tenants": ["e"]}, {"archify_conn_id": "us", "tenants": ["h"]}]
    with pytest.raises(TenantNotFoundError, match="no database of the rollout: nope"):
        plan_shards(registered, 2, only=["a", "nope"])


def test_connection_ids_drop_blanks_and_repeats(airflow_db: None) -> None:
    from archify_airflow.operators import ArchifyStatusOperator

    given = ArchifyStatusOperator(task_id="s", archify_conn_ids=["eu", " us ", "eu", ""])
    assert given.connection_ids() == ["eu", "us"]
    assert ArchifyStatusOperator(task_id="s", archify_conn_ids="eu,us").connection_ids() == [
        "eu", "us"]
    assert ArchifyStatusOperator(task_id="s").connection_ids() is None  # one database


def test_reports_of_several_databases_name_each_schema_with_its_database() -> None:
    def report(database: str, migrated: list[str], failed: dict[str, Any]) -> dict[str, Any]:
        return {"database": database, "migrated": migrated, "failed": failed,
                "summary": {"schemas": len(migrated) + len(failed), "applied": len(migrated),
                            "migrated": len(migrated), "failed": len(failed)}}

    boom = {"public": {"version": "001", "message": "boom"}}
    public = {"reports": [report("eu", ["public"], {}), report("us", [], boom)],
              "unreachable": {"ap": "cannot reach the server"}}
    merged = merge_reports([public, report("eu", ["tenant_a"], {})])
    assert merged["migrated"] == ["eu/public", "eu/tenant_a"]
    assert list(merged["failed"]) == ["us/public"]
    assert merged["unreachable"] == {"ap": "cannot reach the server"}
    assert merged["databases"] == {"eu": {"schemas": 2, "applied": 2, "failed": 0},
                                   "us": {"schemas": 1, "applied": 0, "failed": 1}}
    assert merged["ok"] is False
    one = merge_reports([report("eu", ["tenant_a"], {})])
    assert one["migrated"] == ["tenant_a"] and one["ok"] is True  # one database: plain names


def test_a_fleet_task_migrates_every_database_it_reaches_then_names_the_one_it_cannot(
    dsn: str, second_dsn: str, migrations_dir: Path, airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from archify_airflow.operators import ArchifyConnectionFailed, ArchifyMigrateOperator
    from tests.airflow.test_fleet_rollout import register_fleet

    monkeypatch.setenv("AIRFLOW_CONN_ARCHIFY_EU", dsn)
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIFY_US", second_dsn)
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIFY_DOWN", "postgresql://u:secret@127.0.0.1:9/db")
    register_fleet(dsn, migrations_dir, ["eu1", "eu2"])
    register_fleet(second_dsn, migrations_dir, ["us1"])
    pushed: dict[str, Any] = {}

    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    operator = ArchifyMigrateOperator(
        task_id="m", target="all", migrations=str(migrations_dir),
        archify_conn_ids=["archify_eu", "archify_us", "archify_down"])
    with pytest.raises(ArchifyConnectionFailed) as raised:
        operator.execute({"ti": TI()})

    assert str(raised.value).startswith("connection 'archify_down': ")
    assert "secret" not in str(raised.value) and "secret" not in str(pushed)
    result = pushed["return_value"]
    assert [r["database"] for r in result["reports"]] == ["archify_eu", "archify_us"]
    assert list(result["unreachable"]) == ["archify_down"]
    assert tenant_ledger(dsn, "tenant_eu2")[-1] == "005_add_audit_logs"
    assert tenant_ledger(second_dsn, "tenant_us1")[-1] == "005_add_audit_logs"
