"""Several runners over one fleet at once (CLI processes and in-process engines):
each migration is applied exactly once, and every runner exits cleanly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import pytest

from archify_core import Engine
from tests.reliability.helpers import (
    PYTHON,
    ROOT,
    build_fleet,
    check_fleet,
    clean_env,
    tenant_versions,
    tracked_migrations,
)

TENANTS = 80


async def _cli_runner(dsn: str, folder: Path, reports: list[dict], codes: list[int]) -> None:
    result = await anyio.run_process(
        [PYTHON, "-m", "archify_core", "--dsn", dsn, "--migrations", str(folder),
         "--concurrency", "4", "tenants", "--json"],
        cwd=ROOT, env=clean_env(), check=False)
    codes.append(result.returncode)
    assert b"Traceback" not in result.stderr, result.stderr
    reports.append(json.loads(result.stdout))


async def _engine_runner(dsn: str, folder: Path, reports: list[dict], codes: list[int]) -> None:
    async with Engine(dsn, folder, concurrency=4, load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
    codes.append(0 if report.ok else 1)
    reports.append(report.to_dict())


@pytest.mark.parametrize("runners", [2, 4])
async def test_runners_at_once_apply_each_migration_exactly_once(
    dsn: str, tmp_path: Path, runners: int
) -> None:
    folder = tracked_migrations(tmp_path / "m", 4, sleep=0.01)
    await build_fleet(dsn, folder, TENANTS)
    versions = tenant_versions(folder)
    reports: list[dict] = []
    codes: list[int] = []
    async with anyio.create_task_group() as tg:
        for i in range(runners):
            runner = _cli_runner if i % 2 == 0 else _engine_runner
            tg.start_soon(runner, dsn, folder, reports, codes)

    assert codes == [0] * runners
    applied = Counter(
        (schema["schema"], m["version"])
        for report in reports for schema in report["schemas"] for m in schema["applied"]
    )
    assert len(applied) == TENANTS * len(versions)  # everything applied by someone ...
    assert set(applied.values()) == {1}  # ... and by exactly one runner
    busy = sum(1 for report in reports if any(s["applied"] for s in report["schemas"]))
    assert busy >= 2, f"only {busy} of {runners} runners applied anything: they did not overlap"
    check = await check_fleet(dsn, versions)
    assert check.consistent, check.describe()
    assert check.complete(len(versions)) == TENANTS


@pytest.mark.soak
async def test_soak_eight_runners(dsn: str, tmp_path: Path) -> None:
    folder = tracked_migrations(tmp_path / "m", 6, sleep=0.01)
    await build_fleet(dsn, folder, 300)
    versions = tenant_versions(folder)
    reports: list[dict] = []
    codes: list[int] = []
    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(_cli_runner if i % 2 == 0 else _engine_runner, dsn, folder,
                          reports, codes)
    assert codes == [0] * 8
    applied = Counter((s["schema"], m["version"])
                      for r in reports for s in r["schemas"] for m in s["applied"])
    assert len(applied) == 300 * len(versions) and set(applied.values()) == {1}
    check = await check_fleet(dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 300, check.describe()
