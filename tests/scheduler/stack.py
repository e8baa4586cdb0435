"""Real Airflow 3 components from the venv, as a platform team runs them.

`airflow_stack()` migrates a metadata database of its own on a PostgreSQL server, then
starts the api-server (task workers reach the metadata through its execution API), the
dag-processor and the scheduler with LocalExecutor, each in its own process group, and
kills every group by id when the block ends, whatever happened inside it. The test and
`benchmarks/airflow_scheduler.py` both drive Airflow through its CLI (`Airflow.cli`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAGS_FOLDER = ROOT / "dags"
COMPONENTS = ("api-server", "dag-processor", "scheduler")


def sqlalchemy_url(dsn: str) -> str:
    """The psycopg2 SQLAlchemy URL of a postgresql:// DSN (a socket directory stays in the
    query string, which psycopg2 passes to libpq as `host`)."""
    return "postgresql+psycopg2://" + dsn.split("://", 1)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Airflow:
    """One AIRFLOW_HOME and its environment; `cli` runs `airflow ...` in it."""

    home: Path
    env: dict[str, str]
    metadata_dsn: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run([str(BIN / "airflow"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows from the metadata database (cheaper than a CLI call per poll)."""
        import anyio
        import asyncpg

        async def main() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.metadata_dsn)
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return anyio.run(main)

    def start(self, component: str) -> None:
        log = (self.home / f"{component}.out").open("wb")
        self.processes[component] = subprocess.Popen(
            [str(BIN / "airflow"), component], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own process group
        )

    def stop_all(self) -> None:
        """SIGTERM every component's process group, then SIGKILL what is left."""
        for proc in self.processes.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(proc.pid, signal.SIGKILL)  # task runners the component left behind
            proc.wait()

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.home / f"{name}.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {name} exited {proc.returncode}:\n{tail}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.query("SELECT 1 FROM dag WHERE dag_id = $1 AND NOT is_paused", dag_id):
                return
            time.sleep(1)
        raise TimeoutError(f"the dag-processor did not parse {dag_id} in {timeout:.0f}s")

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or f"manual_{secrets.token_hex(4)}"
        self.cli("dags", "trigger", dag_id, "--conf", json.dumps(conf), "--run-id", run_id)
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = $1 AND run_id = $2",
                          dag_id, run_id)
        return rows[0]["state"] if rows else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {timeout:.0f}s")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


def airflow_env(home: Path, metadata_dsn: str, connections: dict[str, str],
                parallelism: int = 8, extra: dict[str, str] | None = None) -> dict[str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(metadata_dsn),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "ARCHIFY_MIGRATIONS": str(ROOT / "migrations"),
        "PYTHONPATH": str(ROOT),
    })
    for conn_id, uri in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = uri
    env.update(extra or {})
    return env


@contextmanager
def airflow_stack(home: Path, metadata_dsn: str, connections: dict[str, str],
                  **options: Any) -> Iterator[Airflow]:
    """`airflow db migrate`, then api-server, dag-processor and scheduler; all stopped at
    the end by process group."""
    airflow = Airflow(home, airflow_env(home, metadata_dsn, connections, **options), metadata_dsn)
    airflow.cli("db", "migrate", timeout=300)
    with ExitStack() as stack:
        stack.callback(airflow.stop_all)
        for component in COMPONENTS:
            airflow.start(component)
        yield airflow


def socket_dir(dsn: str) -> str | None:
    return parse_qs(urlsplit(dsn).query).get("host", [None])[0]
