"""Lock contention and timeouts: a migration never queues forever behind application
traffic; it gives up after lock_timeout, is retried with backoff a bounded number of
times, and is reported by name if it still cannot run. Other tenants are unaffected."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg

from archify_core import Engine, Outcome
from archify_core.events import Event, MigrationRetrying
from tests.fleet import add_migration
from tests.reliability.helpers import build_fleet, check_fleet, tenant_versions, tracked_migrations


async def _prepare(dsn: str, tmp_path: Path, tenants: int) -> tuple[Path, list[str]]:
    """Every tenant at 002 (users exists), one tracked step pending."""
    folder = tracked_migrations(tmp_path / "m", 0)
    slugs = await build_fleet(dsn, folder, tenants)
    async with Engine(dsn, folder, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).ok
    add_migration(folder, "010_step_10", "tenant", (
        "ALTER TABLE users ADD COLUMN step_10 int;\n"
        "INSERT INTO public.apply_log (schema_name, version) VALUES (current_schema(), "
        "'010_step_10');"))
    return folder, slugs


async def _hold_users_lock(dsn: str, schema: str) -> asyncpg.Connection:
    """An application transaction reading the tenant's users: ACCESS SHARE, which
    the migration's ALTER TABLE (ACCESS EXCLUSIVE) must wait for."""
    app = await asyncpg.connect(dsn)
    await app.execute(f'BEGIN; SELECT count(*) FROM "{schema}".users')
    return app


async def test_lock_held_past_every_retry_is_reported_and_others_complete(
    dsn: str, tmp_path: Path
) -> None:
    folder, slugs = await _prepare(dsn, tmp_path, 12)
    app = await _hold_users_lock(dsn, "tenant_t0003")
    events: list[Event] = []
    try:
        async with Engine(dsn, folder, lock_timeout=0.2, retries=2, retry_backoff=0.05,
                          load_entry_points=False, on_event=events.append) as engine:
            report = await engine.migrate("tenants")
        # the application still holds its lock, yet other sessions read the table freely:
        # the migration is not left queued in front of them
        other = await asyncpg.connect(dsn)
        try:
            await other.execute("SET lock_timeout = '100ms'")
            assert await other.fetchval("SELECT count(*) FROM tenant_t0003.users") == 0
        finally:
            await other.close()
    finally:
        await app.close()

    [failed] = report.failed
    assert failed.slug == "t0003"
    assert failed.failure.version == "010_step_10"
    assert failed.failure.sqlstate == "55P03"
    assert failed.failure.attempts == 3
    assert "lock timeout" in failed.failure.message and "gave up after 3" in failed.failure.message
    retries = [e for e in events if isinstance(e, MigrationRetrying)]
    assert [(e.schema, e.attempt) for e in retries] == [("tenant_t0003", 1), ("tenant_t0003", 2)]
    assert retries[1].delay_s == 2 * retries[0].delay_s  # exponential backoff
    assert report.count(Outcome.MIGRATED) == 11
    versions = tenant_versions(folder)
    check = await check_fleet(dsn, versions)
    assert check.consistent, check.describe()
    assert check.complete(len(versions)) == 11

    async with Engine(dsn, folder, load_entry_points=False) as engine:  # lock gone: re-run
        assert (await engine.migrate("tenants")).ok
    assert (await check_fleet(dsn, versions)).complete(len(versions)) == 12


async def test_lock_released_during_backoff_succeeds_on_retry(dsn: str, tmp_path: Path) -> None:
    folder, _ = await _prepare(dsn, tmp_path, 3)
    app = await _hold_users_lock(dsn, "tenant_t0001")
    released = anyio.Event()
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, MigrationRetrying):
            released.set()

    async def release() -> None:
        await released.wait()
        await app.close()  # the application commits; the lock goes away

    async with (
        Engine(dsn, folder, lock_timeout=0.2, retries=3, retry_backoff=0.3,
               load_entry_points=False, on_event=on_event) as engine,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(release)
        report = await engine.migrate("tenants")
    assert report.ok
    assert report.count(Outcome.MIGRATED) == 3
    assert sum(isinstance(e, MigrationRetrying) for e in events) == 1
    versions = tenant_versions(folder)
    assert (await check_fleet(dsn, versions)).complete(len(versions)) == 3


async def test_statement_timeout_cancels_a_slow_migration_and_names_it(
    dsn: str, tmp_path: Path
) -> None:
    folder, _ = await _prepare(dsn, tmp_path, 3)
    add_migration(folder, "011_slow", "tenant",
                  "CREATE TABLE slow (id int); SELECT pg_sleep(30);")
    async with Engine(dsn, folder, statement_timeout=0.3, retries=3,
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
    assert len(report.failed) == 3
    for result in report.failed:
        assert result.failure.version == "011_slow"
        assert result.failure.sqlstate == "57014"  # query_canceled: not retried
        assert result.failure.attempts == 1
        assert "statement timeout" in result.failure.message
        assert [m.version for m in result.applied] == ["010_step_10"]
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 'slow'") == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM tenant_t0000.schema_migrations WHERE version = '011_slow'") == 0
    finally:
        await conn.close()
