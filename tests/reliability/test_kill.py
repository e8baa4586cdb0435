"""SIGKILL at random points of a fleet rollout: every schema stays at a migration
boundary, the ledger matches the objects, nothing is applied twice, and a re-run
completes the fleet.

Half of the kills hit the test runner (`tests/reliability/runner.py`, killed a
random time after its first schema started), half the real CLI
(`python -m archify_core tenants`, killed a random time after it was spawned).
When a round finds the fleet complete, new migrations are added so the next
kill again lands in the middle of work.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from tests.reliability.helpers import (
    PYTHON,
    ROOT,
    add_steps,
    build_fleet,
    check_fleet,
    clean_env,
    cli,
    tenant_versions,
    tracked_migrations,
)

SLEEP = 0.02  # seconds per tracked migration, so kills land while transactions run


@dataclass
class Campaign:
    kills: int = 0
    alive_at_kill: int = 0  # the runner was still running when it was killed
    mid_rollout: int = 0  # ... and the fleet was left partly migrated
    checks: int = 0
    consistent: int = 0
    double_applied: int = 0
    versions_added: int = 0
    rows: list[str] = field(default_factory=list)

    def line(self, tenants: int) -> str:
        return (f"kill campaign over {tenants} tenants: {self.kills} kills "
                f"({self.alive_at_kill} while running, {self.mid_rollout} mid-rollout), "
                f"{self.consistent}/{self.checks} consistent, {self.double_applied} double-applied")


def _spawn(dsn: str, folder: Path, concurrency: int, use_cli: bool) -> subprocess.Popen:
    if use_cli:
        args = [PYTHON, "-m", "archify_core", "--dsn", dsn, "--migrations", str(folder),
                "--concurrency", str(concurrency), "tenants", "--quiet"]
    else:
        args = [PYTHON, "-m", "tests.reliability.runner", dsn, str(folder), str(concurrency)]
    return subprocess.Popen(args, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def _kill_once(proc: subprocess.Popen, rng: random.Random, use_cli: bool) -> bool:
    """Kill `proc` at a random point; True if it was still running."""
    if use_cli:
        await anyio.sleep(rng.uniform(0.2, 1.6))
    else:
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == "started", (line, proc.stderr.read() if proc.poll() else "")
        await anyio.sleep(rng.uniform(0.0, 1.0))
    alive = proc.poll() is None
    proc.kill()
    await anyio.to_thread.run_sync(proc.wait)
    proc.stdout.close()
    proc.stderr.close()
    return alive


async def run_campaign(dsn: str, tmp_path: Path, *, tenants: int, kills: int,
                       concurrency: int, seed: int) -> Campaign:
    rng = random.Random(seed)
    folder = tracked_migrations(tmp_path / "migrations", 4, sleep=SLEEP)
    await build_fleet(dsn, folder, tenants)
    campaign = Campaign()
    for round_ in range(kills):
        versions = tenant_versions(folder)
        use_cli = round_ % 2 == 1
        proc = _spawn(dsn, folder, concurrency, use_cli)
        alive = await _kill_once(proc, rng, use_cli)
        check = await check_fleet(dsn, versions)
        _record(campaign, check, alive, tenants, len(versions))
        assert check.consistent, f"after kill {round_ + 1}:\n{check.describe()}"
        if check.complete(len(versions)) == tenants:
            add_steps(folder, 3, sleep=SLEEP)
            campaign.versions_added += 3
    return campaign


def _record(campaign: Campaign, check, alive: bool, tenants: int, versions: int) -> None:
    campaign.kills += 1
    campaign.checks += 1
    campaign.alive_at_kill += alive
    campaign.consistent += check.consistent
    campaign.double_applied += sum(
        1 for problems in check.problems.values() for p in problems if "logged 2" in p)
    partly = 0 < check.applied_total < tenants * versions
    campaign.mid_rollout += alive and partly


async def _finish_and_verify(dsn: str, tmp_path: Path, tenants: int) -> None:
    """A plain re-run completes the fleet, and status agrees nothing is pending."""
    folder = tmp_path / "migrations"
    versions = tenant_versions(folder)
    result = cli("--migrations", str(folder), "tenants", "--quiet", dsn=dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    check = await check_fleet(dsn, versions)
    assert check.consistent, check.describe()
    assert check.complete(len(versions)) == tenants
    status = cli("--migrations", str(folder), "status", "--json", dsn=dsn)
    assert status.returncode == 0, status.stderr
    assert '"pending": ["' not in status.stdout


async def test_sigkill_at_random_points_keeps_every_schema_at_a_boundary(
    dsn: str, tmp_path: Path
) -> None:
    tenants = 200
    campaign = await run_campaign(dsn, tmp_path, tenants=tenants, kills=12, concurrency=8,
                                  seed=20261124)
    print(campaign.line(tenants))
    # run_campaign asserted every check consistent (no migration applied twice included)
    assert campaign.alive_at_kill >= 1  # the kills did hit live runners
    assert campaign.mid_rollout >= campaign.kills // 2  # ... mostly in the middle of work
    await _finish_and_verify(dsn, tmp_path, tenants)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [1, 2])
async def test_soak_sigkill_campaign(dsn: str, tmp_path: Path, seed: int) -> None:
    tenants = 400
    campaign = await run_campaign(dsn, tmp_path, tenants=tenants, kills=40, concurrency=16,
                                  seed=seed)
    print(campaign.line(tenants))
    assert campaign.mid_rollout >= campaign.kills // 2
    await _finish_and_verify(dsn, tmp_path, tenants)
