"""The README's Airflow instructions, run as written: a fresh AIRFLOW_HOME, `airflow db
migrate`, the archify commands, then `airflow dags test` of the example DAG, each as its
own process. Only the connection URI is swapped for this test's database, and the
commands run in a scratch folder that links to the repo's `dags/`, `migrations/` and
virtualenv (so `$PWD/.airflow` is thrown away with it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio

from archify_core import Scope, load_migrations
from tests.fleet import fetchval, ledger_versions

ROOT = Path(__file__).resolve().parents[2]
README_URI = "postgresql://postgres@localhost:5432/app"


def readme_airflow_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Airflow"):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README's Airflow section has no bash block"
    return match.group(1)


def test_readme_airflow_commands_run_the_example_dag(dsn: str, tmp_path: Path) -> None:
    block = readme_airflow_block()
    assert README_URI in block and "airflow dags test" in block
    for name in ("dags", "migrations"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    # A clean environment: nothing of the suite's own Airflow settings leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ARCHIFY"))}
    script = "set -euo pipefail\n" + block.replace(README_URI, dsn) + (
        "\n.venv/bin/airflow providers list\n"
    )

    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"^archify\s", done.stdout, re.M), done.stdout[-2000:]
    every_tenant_version = [m.version for m in
                            load_migrations(ROOT / "migrations").for_kind(Scope.TENANT)]
    assert anyio.run(ledger_versions, dsn, "tenant_acme") == every_tenant_version
    assert anyio.run(fetchval, dsn, "SELECT count(*) FROM public.tenants") == 1
