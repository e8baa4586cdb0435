"""Trigger-to-finished of the example DAG under a real Airflow scheduler against
`archify all`, on the same fleet, in the same run (`make bench-airflow`).

One embedded PostgreSQL holds the Airflow metadata DB and two identical fleets (public
migrated, N tenants registered with empty ledgers). `archify all` migrates one; the
DAG, triggered with `airflow dags trigger`, migrates the other in 8 shards under
LocalExecutor. Each shard's overhead is its task time (task_instance start to end)
minus its engine call (the "rollout ... finished in Xs" line the operator logs).

    python -m benchmarks.airflow_scheduler [--tenants 2000] [--shards 8]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

from archify_core.embedded import embedded_server, with_database
from tests.airflow.test_fleet_rollout import register_fleet
from tests.fleet import execute
from tests.scheduler.stack import BIN, ROOT, airflow_stack

DAG_ID = "archify_fleet_rollout"
ENGINE_TIME = re.compile(r"^rollout .* finished in ([0-9.]+)s")


def shard_engine_seconds(log: Path) -> float:
    for line in reversed(log.read_text().splitlines()):
        event = json.loads(line).get("event", "") if line.startswith("{") else ""
        match = ENGINE_TIME.match(event)
        if match:
            return float(match.group(1))
    raise ValueError(f"no engine time in {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4, help="schemas at once per shard")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="archify-bench-airflow-"))
    base.chmod(0o755)
    slugs = [f"t{i:05d}" for i in range(args.tenants)]
    migrations = ROOT / "migrations"
    try:
        with embedded_server(base / "pg", cleanup_mode="delete") as uri:
            anyio.run(execute, uri,
                      'CREATE DATABASE airflow_meta', 'CREATE DATABASE fleet_cli',
                      'CREATE DATABASE fleet_dag')
            fleets = {name: with_database(uri, name) for name in ("fleet_cli", "fleet_dag")}
            for dsn in fleets.values():
                register_fleet(dsn, migrations, slugs)

            started = time.monotonic()
            subprocess.run([str(BIN / "archify"), "--dsn", fleets["fleet_cli"], "--migrations",
                            str(migrations), "all"], check=True, capture_output=True)
            cli_s = time.monotonic() - started

            home = base / "home"
            home.mkdir()
            with airflow_stack(home, with_database(uri, "airflow_meta"),
                               {"archify_default": fleets["fleet_dag"]}) as airflow:
                airflow.wait_for_dag(DAG_ID)
                started = time.monotonic()
                run_id = airflow.trigger(DAG_ID, {
                    "shard_size": -(-args.tenants // args.shards),
                    "concurrency": args.concurrency})
                state = airflow.wait_for_run(DAG_ID, run_id, timeout=1800)
                dag_s = time.monotonic() - started
                rows = airflow.query(
                    "SELECT map_index, start_date, end_date FROM task_instance WHERE dag_id = $1"
                    " AND run_id = $2 AND task_id = 'migrate_shard' ORDER BY map_index",
                    DAG_ID, run_id)
                logs = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
                overheads = []
                for row in rows:
                    task_s = (row["end_date"] - row["start_date"]).total_seconds()
                    log = (logs / "task_id=migrate_shard" / f"map_index={row['map_index']}"
                           / "attempt=1.log")
                    engine_s = shard_engine_seconds(log)
                    overheads.append(task_s - engine_s)
                    print(f"shard {row['map_index']}: task {task_s:.2f}s, engine {engine_s:.2f}s, "
                          f"overhead {task_s - engine_s:.2f}s")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.tenants} tenants: archify all {cli_s:.1f}s; DAG ({len(rows)} shards, "
          f"LocalExecutor) trigger-to-finished {dag_s:.1f}s, state {state}; shard overhead "
          f"median {statistics.median(overheads):.2f}s, max {max(overheads):.2f}s")


if __name__ == "__main__":
    main()
