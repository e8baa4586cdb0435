"""Every byte of a report reaches the reader, however slowly it reads; a reader that goes
away ends the command quietly.

`archify status --json | (sleep 3; cat)` once received exactly 64 KiB of a larger
document, with exit 0: Python's buffered stdout dropped the rest of a short write
after the event loop had run. These tests read through real pipes, late and in small
pieces, and parse what arrives.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from archify_core import Engine
from tests.fleet import register_tenants
from tests.reliability.helpers import PYTHON, ROOT, clean_env


def _start(dsn: str, migrations: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "archify_core", "--dsn", dsn, "--migrations", str(migrations), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=clean_env())


def _read_late_and_slowly(process: subprocess.Popen[bytes], wait: float) -> tuple[bytes, int]:
    """A reader that starts `wait` seconds late and then takes 4 KiB at a time."""
    assert process.stdout is not None
    time.sleep(wait)
    chunks = []
    while chunk := process.stdout.read1(4096):
        chunks.append(chunk)
        time.sleep(0.001)
    process.wait(timeout=120)
    return b"".join(chunks), process.returncode


async def _fleet(dsn: str, migrations: Path, tenants: int) -> list[str]:
    async with Engine(dsn, migrations, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
    slugs = [f"t{i:04d}" for i in range(tenants)]
    await register_tenants(dsn, slugs)
    return slugs


async def test_status_json_reaches_a_late_reader_whole(dsn: str, migrations_dir: Path) -> None:
    slugs = await _fleet(dsn, migrations_dir, 900)
    process = _start(dsn, migrations_dir, "status", "--json")
    data, code = _read_late_and_slowly(process, 3.0)
    assert code == 0, process.stderr.read() if process.stderr else ""
    assert len(data) > 128 * 1024  # well past one pipe buffer
    status = json.loads(data)
    assert sorted(t["schema"] for t in status["tenants"]) == [f"tenant_{s}" for s in slugs]


async def test_a_rollout_report_reaches_a_late_reader_whole(
    dsn: str, migrations_dir: Path
) -> None:
    slugs = await _fleet(dsn, migrations_dir, 200)
    process = _start(dsn, migrations_dir, "all", "--json")
    data, code = _read_late_and_slowly(process, 2.0)
    assert code == 0, process.stderr.read() if process.stderr else ""
    report = json.loads(data)
    migrated = {s["schema"] for s in report["schemas"] if s["outcome"] == "migrated"}
    assert migrated == {f"tenant_{s}" for s in slugs}


async def test_a_reader_that_goes_away_ends_the_command_quietly(
    dsn: str, migrations_dir: Path
) -> None:
    """`archify all --dry-run | head -3`: exit 0, nothing on stderr, nothing applied."""
    await _fleet(dsn, migrations_dir, 300)
    for args in (["all", "--dry-run"], ["status"]):
        process = _start(dsn, migrations_dir, *args)
        assert process.stdout is not None and process.stderr is not None
        head = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()
        code = process.wait(timeout=120)
        stderr = process.stderr.read().decode()
        assert all(head), head
        assert code == 0, (args, stderr)
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    status = _start(dsn, migrations_dir, "status", "--json")
    out, _ = status.communicate(timeout=120)
    assert all(t["applied"] == [] for t in json.loads(out)["tenants"])
