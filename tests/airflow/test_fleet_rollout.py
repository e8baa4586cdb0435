"""The example DAG, run for real (`dag.test()`) against a real PostgreSQL database.

`dag.test()` does not raise when a task fails: every test asserts on the returned
run's state, on each task instance's state, on XCom, and on the database itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from archify_core import Engine

DAG_ID = "archify_fleet_rollout"
TENANT_VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]
TENANT_TABLES = {"analyses", "audit_logs", "repositories", "schema_migrations", "users"}
CANARY = ["t00", "t01"]
FLEET = [f"t{i:02d}" for i in range(42)]  # 2 canaries + 40 tenants in 4 shards of 10


def register_fleet(dsn: str, migrations: Path, slugs: list[str]) -> None:
    """public migrated, tenants registered with empty ledgers (what a rollout then fills)."""

    async def main() -> None:
        async with Engine(dsn, migrations=migrations, load_entry_points=False) as engine:
            await engine.migrate("public")
            for slug in slugs:
                await engine.create_tenant(slug, migrate=False)

    anyio.run(main)


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def main() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return anyio.run(main)


def ledgers(dsn: str) -> dict[str, list[str]]:
    """Applied versions per tenant schema, read from the database."""
    result: dict[str, list[str]] = {}
    for row in sql(dsn, "SELECT schema_name FROM public.tenants ORDER BY slug"):
        schema = row["schema_name"]
        versions = sql(dsn, f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
        result[schema] = [v["version"] for v in versions]
    return result


def tables(dsn: str, schema: str) -> set[str]:
    rows = sql(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {r["tablename"] for r in rows}


def run_dag(dag: Any, migrations: Path | None, **conf: Any) -> Any:
    """Run the DAG; migrations=None leaves the param empty (the workers' env decides)."""
    conf = {"shard_size": 10, "canary": CANARY, **conf}
    if migrations is not None:
        conf["migrations"] = str(migrations)
    return dag.test(run_conf=conf)


def task_states(run: Any) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}


def xcom(run: Any, task_id: str, map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id,
                               map_indexes=map_index, key="return_value")
            .with_only_columns(XComModel.value)
        ).first()
    return None if row is None else XComModel.deserialize_value(row)


@pytest.fixture
def fleet(archify_conn: str, migrations_dir: Path) -> str:
    register_fleet(archify_conn, migrations_dir, FLEET)
    return archify_conn


def test_rollout_migrates_every_tenant_in_mapped_shards(
    rollout_dag: Any, fleet: str, migrations_dir: Path
) -> None:
    run = run_dag(rollout_dag, migrations_dir)

    assert run.state == "success"
    states = task_states(run)
    assert [i for (t, i), s in states.items() if t == "migrate_shard" and s == "success"] == [
        0, 1, 2, 3]
    assert set(states.values()) == {"success"}
    assert ledgers(fleet) == {f"tenant_{s}": TENANT_VERSIONS for s in FLEET}
    assert all(tables(fleet, f"tenant_{s}") == TENANT_TABLES for s in FLEET)

    assert xcom(run, "shard_tenants") == [
        {"archify_conn_id": "archify_default", "tenants": FLEET[2 + 10 * i: 12 + 10 * i]}
        for i in range(4)]
    shard = xcom(run, "migrate_shard", 0)
    assert shard["migrated"] == [f"tenant_{s}" for s in FLEET[2:12]]
    assert shard["summary"]["migrated"] == 10
    summary = xcom(run, "summary")
    assert summary["ok"] is True
    assert summary["shards"] == 4
    assert summary["outcomes"]["migrated"] == 42
    assert summary["outcomes"]["up_to_date"] == 1  # public, migrated before the run
    # The summary stays small: counts in full, the first 20 names, how many were left out.
    assert summary["migrated"] == [f"tenant_{s}" for s in FLEET[:20]]
    assert summary["left_out"] == {"migrated": 22, "failed": 0, "skipped": 0}
    assert summary["applied"] == 42 * 3
    assert {v: t["schemas"] for v, t in summary["timings"].items()} == {
        v: 42 for v in TENANT_VERSIONS}


def test_failing_tenant_fails_its_shard_only_and_a_rerun_completes(
    rollout_dag: Any, fleet: str, migrations_dir: Path
) -> None:
    # A hand-made users table without a key: 002's foreign key to users(id) fails there.
    sql(fleet, "CREATE TABLE tenant_t17.users (id int)")

    run = run_dag(rollout_dag, migrations_dir)

    assert run.state == "failed"
    states = task_states(run)
    shard_states = {i: s for (t, i), s in states.items() if t == "migrate_shard"}
    assert shard_states == {0: "success", 1: "failed", 2: "success", 3: "success"}
    assert states[("summary", -1)] == "failed"
    applied = ledgers(fleet)
    assert applied.pop("tenant_t17") == []
    assert applied == {f"tenant_{s}": TENANT_VERSIONS for s in FLEET if s != "t17"}
    failed_shard = xcom(run, "migrate_shard", 1)
    assert list(failed_shard["failed"]) == ["tenant_t17"]
    assert failed_shard["failed"]["tenant_t17"]["version"] == "002_create_tenant_tables"
    assert len(failed_shard["migrated"]) == 9
    summary = xcom(run, "summary")
    assert summary["ok"] is False
    assert list(summary["failed"]) == ["tenant_t17"]
    assert summary["outcomes"]["migrated"] == 41

    sql(fleet, "DROP TABLE tenant_t17.users")
    rerun = run_dag(rollout_dag, migrations_dir)

    assert rerun.state == "success"
    assert ledgers(fleet) == {f"tenant_{s}": TENANT_VERSIONS for s in FLEET}
    resummary = xcom(rerun, "summary")
    assert resummary["migrated"] == ["tenant_t17"]
    assert resummary["outcomes"]["up_to_date"] == 42

    # Nothing pending any more: the status task skips everything downstream.
    idle = run_dag(rollout_dag, migrations_dir)
    assert idle.state == "success"
    idle_states = task_states(idle)
    assert idle_states.pop(("status", -1)) == "success"
    assert set(idle_states.values()) == {"skipped"}
    assert xcom(idle, "status")["pending_count"] == 0


def test_failing_canary_stops_the_fleet(
    rollout_dag: Any, fleet: str, migrations_dir: Path
) -> None:
    sql(fleet, "CREATE TABLE tenant_t01.users (id int)")

    run = run_dag(rollout_dag, migrations_dir)

    assert run.state == "failed"
    states = task_states(run)
    assert states[("migrate_canary", -1)] == "failed"
    assert states[("migrate_shard", -1)] == "upstream_failed"
    assert states[("summary", -1)] == "failed"
    applied = ledgers(fleet)
    assert applied.pop("tenant_t00") == TENANT_VERSIONS
    assert set(map(tuple, applied.values())) == {()}  # the fleet was never touched


def test_dry_run_changes_nothing(
    rollout_dag: Any, fleet: str, migrations_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No `migrations` param: the operators read the worker's ARCHIFY_MIGRATIONS when they
    # run (from a folder with no ./migrations, so only the variable can be what worked).
    assert rollout_dag.params["migrations"] is None
    monkeypatch.setenv("ARCHIFY_MIGRATIONS", str(migrations_dir))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    run = run_dag(rollout_dag, None, dry_run=True, tenants=FLEET[:12], shard_size=5)

    assert run.state == "success"
    assert set(map(tuple, ledgers(fleet).values())) == {()}
    summary = xcom(run, "summary")
    assert summary["shards"] == 2  # 10 tenants once the 2 canaries are left out
    assert summary["outcomes"]["planned"] == 12
    shard = xcom(run, "migrate_shard", 0)
    assert shard["planned"]["tenant_t02"] == TENANT_VERSIONS


def test_drift_check_is_off_by_default_and_when_on_stops_before_migrating(
    rollout_dag: Any, archify_conn: str, migrations_dir: Path
) -> None:
    from tests.fleet import add_migration

    register_fleet(archify_conn, migrations_dir, ["t00", "t01", "t02"])
    sql(archify_conn, "CREATE TABLE tenant_t02.hotfix (id int)")

    run = run_dag(rollout_dag, migrations_dir)  # off by default: the rollout goes on

    assert run.state == "success"
    assert xcom(run, "drift_check") == {"checked": False}
    assert set(map(tuple, ledgers(archify_conn).values())) == {tuple(TENANT_VERSIONS)}

    add_migration(migrations_dir, "006_add_notes", "tenant", "CREATE TABLE notes (id int);")
    run = run_dag(rollout_dag, migrations_dir, drift_check=True)

    assert run.state == "failed"
    states = task_states(run)
    assert states[("drift_check", -1)] == "failed"
    assert states[("migrate_public", -1)] == "upstream_failed"
    assert set(map(tuple, ledgers(archify_conn).values())) == {tuple(TENANT_VERSIONS)}


# -- one DAG run over two databases ------------------------------------------------------

EU = [f"eu{i:02d}" for i in range(10)]
US = [f"us{i:02d}" for i in range(7)]


@pytest.fixture
def two_databases(dsn: str, second_dsn: str, migrations_dir: Path,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Connections archify_eu and archify_us, each a database with its own tenants."""
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIFY_EU", dsn)
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIFY_US", second_dsn)
    register_fleet(dsn, migrations_dir, EU)
    register_fleet(second_dsn, migrations_dir, US)
    return {"archify_eu": dsn, "archify_us": second_dsn}


def test_one_run_migrates_every_database_with_a_canary_in_each(
    rollout_dag: Any, two_databases: dict[str, str], migrations_dir: Path
) -> None:
    run = run_dag(rollout_dag, migrations_dir, conn_ids=list(two_databases), canary=["us03"],
                  canary_per_database=1, shard_size=4)

    assert run.state == "success"
    for dsn, slugs in ((two_databases["archify_eu"], EU), (two_databases["archify_us"], US)):
        assert ledgers(dsn) == {f"tenant_{s}": TENANT_VERSIONS for s in slugs}
        assert all(tables(dsn, f"tenant_{s}") == TENANT_TABLES for s in slugs)

    # the canaries: the one named, and the first tenant of every database
    assert xcom(run, "migrate_canary")["summary"]["migrated"] == 3
    canary = {r["database"]: r["migrated"] for r in xcom(run, "migrate_canary")["reports"]}
    assert canary == {"archify_eu": ["tenant_eu00"],
                      "archify_us": ["tenant_us00", "tenant_us03"]}
    # each database's other tenants in shards of their own
    plans = xcom(run, "shard_tenants")
    assert plans == [
        {"archify_conn_id": "archify_eu", "tenants": EU[1:5]},
        {"archify_conn_id": "archify_eu", "tenants": EU[5:9]},
        {"archify_conn_id": "archify_eu", "tenants": EU[9:]},
        {"archify_conn_id": "archify_us", "tenants": ["us01", "us02", "us04", "us05"]},
        {"archify_conn_id": "archify_us", "tenants": ["us06"]},
    ]
    assert [xcom(run, "migrate_shard", i)["database"] for i in range(5)] == [
        "archify_eu"] * 3 + ["archify_us"] * 2
    summary = xcom(run, "summary")
    assert summary["ok"] is True and summary["shards"] == 5
    assert summary["outcomes"]["migrated"] == len(EU) + len(US)
    assert summary["outcomes"]["up_to_date"] == 2  # each database's public
    assert summary["databases"] == {
        "archify_eu": {"schemas": len(EU) + 1, "applied": 3 * len(EU), "failed": 0},
        "archify_us": {"schemas": len(US) + 1, "applied": 3 * len(US), "failed": 0},
    }
    assert "archify_eu/tenant_eu00" in summary["migrated"]


def test_a_failed_shard_names_its_database(
    rollout_dag: Any, two_databases: dict[str, str], migrations_dir: Path
) -> None:
    sql(two_databases["archify_us"], "CREATE TABLE tenant_us05.users (id int)")

    run = run_dag(rollout_dag, migrations_dir, conn_ids=list(two_databases), canary=[],
                  shard_size=4)

    assert run.state == "failed"
    shards = {ti.map_index: ti for ti in run.get_task_instances() if ti.task_id == "migrate_shard"}
    assert {i: ti.state for i, ti in shards.items()} == {
        0: "success", 1: "success", 2: "success", 3: "success", 4: "failed"}
    assert shards[4].rendered_map_index == "archify_us: us04 .. us06"
    failed = xcom(run, "migrate_shard", 4)
    assert failed["database"] == "archify_us" and list(failed["failed"]) == ["tenant_us05"]
    summary = xcom(run, "summary")
    assert list(summary["failed"]) == ["archify_us/tenant_us05"]
    assert summary["databases"]["archify_us"]["failed"] == 1
    assert summary["databases"]["archify_eu"]["failed"] == 0
    us = ledgers(two_databases["archify_us"])
    assert us.pop("tenant_us05") == []
    assert set(map(tuple, us.values())) == {tuple(TENANT_VERSIONS)}
    assert set(map(tuple, ledgers(two_databases["archify_eu"]).values())) == {
        tuple(TENANT_VERSIONS)}
