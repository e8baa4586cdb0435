"""Lost connections mid-rollout: backends terminated with pg_terminate_backend, and a
server restart. Affected schemas are retried (bounded) or reported with the reason;
the rest complete; every schema stays consistent; a re-run finishes the job."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg

from archify_core import Engine, Outcome
from archify_core.events import Event, MigrationRetrying
from tests.reliability.conftest import PrivateServer
from tests.reliability.helpers import build_fleet, check_fleet, tenant_versions, tracked_migrations

TERMINATE_ACTIVE = """
SELECT count(pg_terminate_backend(pid)) FROM (
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'archify'
      AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()
    LIMIT 1) one
"""


async def _terminate(dsn: str, wanted: int) -> int:
    """Terminate backends running a migration until `wanted` have been hit."""
    conn = await asyncpg.connect(dsn)
    hit = 0
    try:
        while hit < wanted:
            hit += await conn.fetchval(TERMINATE_ACTIVE)
            await anyio.sleep(0.15)
    finally:
        await conn.close()
    return hit


async def _rollout_under_terminations(dsn: str, tmp_path: Path, retries: int, wanted: int):
    """A 40-tenant fleet with 3 tracked migrations, rolled out while `wanted` migrating
    backends are terminated: (folder, versions, report, events)."""
    folder = tracked_migrations(tmp_path / "m", 3, sleep=0.05)
    await build_fleet(dsn, folder, 40)
    versions = tenant_versions(folder)
    events: list[Event] = []

    async def killer() -> None:
        await _terminate(dsn, wanted)

    async with (
        Engine(dsn, folder, concurrency=6, retries=retries, retry_backoff=0.05,
               load_entry_points=False, on_event=events.append) as engine,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(killer)
        report = await engine.migrate("tenants")
        tg.cancel_scope.cancel()
    return folder, versions, report, events


async def test_terminated_backends_without_retries_are_reported_by_name(
    dsn: str, tmp_path: Path
) -> None:
    folder, versions, report, _ = await _rollout_under_terminations(
        dsn, tmp_path, retries=0, wanted=3)

    failed = report.failed
    assert 1 <= len(failed) <= 3
    for result in failed:
        assert result.failure.message.startswith("connection lost"), result.failure
        assert result.failure.version in versions
        assert result.failure.attempts == 1
    assert report.count(Outcome.MIGRATED) == 40 - len(failed)
    check = await check_fleet(dsn, versions)
    assert check.consistent, check.describe()

    async with Engine(dsn, folder, load_entry_points=False) as engine:
        again = await engine.migrate("tenants")
    assert again.ok
    assert {r.schema for r in again.schemas if r.outcome is Outcome.MIGRATED} == {
        r.schema for r in failed}
    check = await check_fleet(dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 40, check.describe()


async def test_terminated_backends_are_retried_and_the_fleet_completes(
    dsn: str, tmp_path: Path
) -> None:
    _, versions, report, events = await _rollout_under_terminations(
        dsn, tmp_path, retries=3, wanted=3)

    assert report.ok, [r.failure for r in report.failed]
    retried = [e for e in events if isinstance(e, MigrationRetrying)]
    assert len(retried) >= 1
    assert all("connection lost" in e.reason for e in retried)
    check = await check_fleet(dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 40, check.describe()


async def test_server_restart_mid_rollout(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    """A fast restart kills every connection and refuses new ones for a moment. With
    retries and a backoff that outlasts the restart, the rollout rides it out; whatever
    could not be retried is named, and a re-run finishes."""
    folder = tracked_migrations(tmp_path / "m", 3, sleep=0.05)
    await build_fleet(private_dsn, folder, 60)
    versions = tenant_versions(folder)
    events: list[Event] = []
    restarted = anyio.Event()

    def on_event(event: Event) -> None:
        events.append(event)

    async def restart() -> None:
        await _wait_for_active_migration(private_dsn)
        await anyio.to_thread.run_sync(private_server.restart)
        restarted.set()

    async with (
        Engine(private_dsn, folder, concurrency=6, retries=5, retry_backoff=0.2,
               load_entry_points=False, on_event=on_event) as engine,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(restart)
        report = await engine.migrate("tenants")
    assert restarted.is_set()
    for result in report.failed:  # only lost connections, each named with its migration
        assert "connection" in result.failure.message.lower() or result.failure.sqlstate in {
            "57P01", "57P03"}, result.failure
        assert result.failure.version in versions
    assert any(isinstance(e, MigrationRetrying) for e in events)
    check = await check_fleet(private_dsn, versions)
    assert check.consistent, check.describe()

    async with Engine(private_dsn, folder, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).ok
    check = await check_fleet(private_dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 60, check.describe()


async def _wait_for_active_migration(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:  # polling the server: there is no event to wait on across processes
        while not await conn.fetchval(  # noqa: ASYNC110
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'archify' "
            "AND state = 'active' AND query LIKE '%pg_sleep%'"
        ):
            await anyio.sleep(0.02)
    finally:
        await conn.close()
