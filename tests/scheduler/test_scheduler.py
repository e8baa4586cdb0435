"""The example DAG under real Airflow components: scheduler, dag-processor, api-server,
LocalExecutor with parallelism 8, the metadata DB on the suite's PostgreSQL.

One stack serves the module; every scenario has a fleet database (and connection) of its
own. The tests run in file order: the failure path clears `--only-failed` over the whole
DAG, so it comes before the tests that leave failed tasks behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from archify_core.embedded import with_database
from tests.airflow.test_fleet_rollout import TENANT_TABLES, ledgers, register_fleet, sql, tables
from tests.conftest import EXAMPLE_MIGRATIONS
from tests.fleet import execute
from tests.scheduler.stack import Airflow, airflow_stack, free_port

pytestmark = pytest.mark.scheduler

DAG_ID = "archify_fleet_rollout"
FLEET = [f"t{i:03d}" for i in range(302)]
CANARY = ["t000", "t001"]
SHARD_SIZE = 38  # 300 tenants -> 8 shards
VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]
FAILING = "t123"  # its shard is 123 // 38 - ... computed from the shard list
NICKNAME = '''"""
Users get a nickname

# MIGRATION_SCOPE: tenant
# MIGRATION_VERSION: 006_add_user_nickname
# MIGRATION_DESCRIPTION: users.nickname
"""

UPGRADE_SQL = "ALTER TABLE users ADD COLUMN nickname TEXT"
DOWNGRADE_SQL = "ALTER TABLE users DROP COLUMN nickname"
'''
DATABASES = ("airflow_meta", "fleet_ok", "fleet_fail", "fleet_twice")


@pytest.fixture(scope="module")
def stack(server_dsn: str) -> Iterator[tuple[Airflow, dict[str, str]]]:
    anyio.run(execute, server_dsn, *[f'CREATE DATABASE "{d}"' for d in DATABASES])
    dsns = {d: with_database(server_dsn, d) for d in DATABASES}
    home = Path(tempfile.mkdtemp(prefix="archify-scheduler-"))
    connections = {
        "archify_default": dsns["fleet_ok"], "archify_fail": dsns["fleet_fail"],
        "archify_twice": dsns["fleet_twice"],
        "archify_down": f"postgresql://postgres:x@127.0.0.1:{free_port()}/fleet",
    }
    try:
        with airflow_stack(home, dsns["airflow_meta"], connections) as airflow:
            airflow.wait_for_dag(DAG_ID)
            yield airflow, dsns
    finally:
        anyio.run(execute, server_dsn,
                  *[f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)' for d in DATABASES])
        shutil.rmtree(home, ignore_errors=True)


def task_instances(airflow: Airflow, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = airflow.query(
        "SELECT task_id, map_index, state, try_number, start_date, end_date FROM task_instance"
        " WHERE dag_id = $1 AND run_id = $2", DAG_ID, run_id)
    return {(r["task_id"], r["map_index"]): r for r in rows}


def most_at_once(rows: list[dict[str, Any]]) -> int:
    """The most task instances running at the same moment (from their start and end)."""
    edges = sorted([(r["start_date"], 1) for r in rows] + [(r["end_date"], -1) for r in rows],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def shard_rows(tis: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    return [ti for (task, _), ti in sorted(tis.items()) if task == "migrate_shard"]


def task_log(airflow: Airflow, run_id: str, task_id: str, map_index: int = -1,
             attempt: int = 1) -> list[dict[str, Any]]:
    """The task's log events (Airflow 3 writes one JSON object per line)."""
    folder = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder /= f"map_index={map_index}"
    lines = (folder / f"attempt={attempt}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def archify_lines(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events if "archify_airflow" in str(e.get("logger"))]


def shards_of(airflow: Airflow, run_id: str) -> list[list[str]]:
    rows = airflow.query("SELECT value FROM xcom WHERE dag_id = $1 AND run_id = $2 AND "
                         "task_id = 'shard_tenants' AND key = 'return_value'", DAG_ID, run_id)
    value = rows[0]["value"]
    plans = json.loads(value) if isinstance(value, str) else value
    return [plan["tenants"] for plan in plans]  # {"archify_conn_id": ..., "tenants": [...]}


def test_rollout_runs_shards_at_once(stack: tuple[Airflow, dict[str, str]]) -> None:
    airflow, dsns = stack
    register_fleet(dsns["fleet_ok"], EXAMPLE_MIGRATIONS, FLEET)
    run_id = airflow.trigger(DAG_ID, {"canary": CANARY, "shard_size": SHARD_SIZE,
                                      "concurrency": 4})
    assert airflow.wait_for_run(DAG_ID, run_id) == "success"

    tis = task_instances(airflow, run_id)
    assert {ti["state"] for ti in tis.values()} == {"success"}
    shards = shard_rows(tis)
    assert len(shards) == 8
    print(f"shards at once: {most_at_once(shards)}")
    starts = [s["start_date"] for s in shards]
    assert most_at_once(shards) >= 2, "the shards ran one after another"
    assert tis[("migrate_canary", -1)]["end_date"] <= min(starts)

    assert ledgers(dsns["fleet_ok"]) == {f"tenant_{t}": VERSIONS for t in FLEET}
    assert all(tables(dsns["fleet_ok"], f"tenant_{t}") == TENANT_TABLES for t in FLEET)

    for index, slugs in enumerate(shards_of(airflow, run_id)):
        lines = archify_lines(task_log(airflow, run_id, "migrate_shard", index))
        named = {line.split(":", 1)[0] for line in lines}
        assert {f"tenant_{s}" for s in slugs} <= named
        assert lines[-1].startswith(f"rollout {','.join(slugs)} finished in ")
        assert f"'schemas': {len(slugs)}" in lines[-1] and "'failed': 0" in lines[-1]


def test_one_failing_tenant_fails_its_shard_alone(
    stack: tuple[Airflow, dict[str, str]], tmp_path: Path,
) -> None:
    airflow, dsns = stack
    dsn = dsns["fleet_fail"]
    register_fleet(dsn, EXAMPLE_MIGRATIONS, FLEET)
    migrations = tmp_path / "migrations"
    shutil.copytree(EXAMPLE_MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    conf = {"canary": CANARY, "shard_size": SHARD_SIZE, "conn_id": "archify_fail",
            "concurrency": 4, "migrations": str(migrations)}
    assert airflow.wait_for_run(DAG_ID, airflow.trigger(DAG_ID, conf)) == "success"

    (migrations / "006_add_user_nickname.py").write_text(NICKNAME)
    sql(dsn, f'ALTER TABLE "tenant_{FAILING}".users ADD COLUMN nickname TEXT')
    run_id = airflow.trigger(DAG_ID, conf)
    assert airflow.wait_for_run(DAG_ID, run_id) == "failed"

    bad = next(i for i, s in enumerate(shards_of(airflow, run_id)) if FAILING in s)
    tis = task_instances(airflow, run_id)
    states = {i: ti["state"] for i, ti in enumerate(shard_rows(tis))}
    assert states == {i: "failed" if i == bad else "success" for i in range(8)}
    assert tis[("summary", -1)]["state"] == "failed"
    shard_log = archify_lines(task_log(airflow, run_id, "migrate_shard", bad))
    assert any(line.startswith(f"tenant_{FAILING}: FAILED at 006_add_user_nickname")
               for line in shard_log)
    summary = " ".join(e["event"] for e in task_log(airflow, run_id, "summary"))
    assert f"tenant_{FAILING}" in summary

    sql(dsn, f'ALTER TABLE "tenant_{FAILING}".users DROP COLUMN nickname')
    airflow.cli("tasks", "clear", DAG_ID, "--only-failed", "--yes")
    assert airflow.wait_for_run(DAG_ID, run_id) == "success"
    tries = {i: ti["try_number"] for i, ti in enumerate(shard_rows(task_instances(airflow, run_id)))}
    assert tries == {i: 2 if i == bad else 1 for i in range(8)}
    assert ledgers(dsn) == {f"tenant_{t}": [*VERSIONS, "006_add_user_nickname"] for t in FLEET}


def test_two_runs_at_once_apply_each_migration_once(
    stack: tuple[Airflow, dict[str, str]],
) -> None:
    airflow, dsns = stack
    dsn = dsns["fleet_twice"]
    register_fleet(dsn, EXAMPLE_MIGRATIONS, FLEET[:120])
    conf = {"shard_size": 15, "conn_id": "archify_twice", "concurrency": 4}
    runs = [airflow.trigger(DAG_ID, conf), airflow.trigger(DAG_ID, conf)]
    states = [airflow.wait_for_run(DAG_ID, run) for run in runs]
    assert states == ["success", "success"]
    counts = sql(dsn, "SELECT table_schema FROM information_schema.tables "
                 "WHERE table_name = 'schema_migrations' AND table_schema LIKE 'tenant_%'")
    for row in counts:
        versions = sql(dsn, f'SELECT version, count(*) AS n FROM "{row["table_schema"]}"'
                       ".schema_migrations GROUP BY version")
        assert {v["version"]: v["n"] for v in versions} == dict.fromkeys(VERSIONS, 1)
    assert len(counts) == 120


@pytest.mark.parametrize(("conn_id", "names"), [
    ("no_such_conn", "no_such_conn"), ("archify_down", "archify_down"),
])
def test_a_bad_connection_fails_the_first_task_in_one_line(
    stack: tuple[Airflow, dict[str, str]], conn_id: str, names: str,
) -> None:
    airflow, _ = stack
    started = datetime.now()
    run_id = airflow.trigger(DAG_ID, {"conn_id": conn_id})
    assert airflow.wait_for_run(DAG_ID, run_id, timeout=180) == "failed"
    tis = task_instances(airflow, run_id)
    assert tis[("status", -1)]["state"] == "failed"
    assert tis[("status", -1)]["try_number"] == 1
    events = task_log(airflow, run_id, "status")
    ours = [e["event"] for e in events if e.get("level") == "error"
            and "archify_airflow" in str(e.get("logger"))]
    assert len(ours) == 1 and ours[0].startswith(f"connection {names!r}")
    failed = [e for e in events if e.get("event") == "Task failed with exception"]
    assert [d["exc_value"] for d in failed[0]["error_detail"]] == [ours[0]]  # no chain
    assert "***" in ours[0] or "not defined" in ours[0]  # never the password
    assert datetime.now() - started < timedelta(seconds=60)
