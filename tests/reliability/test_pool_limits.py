"""A pool smaller than the concurrency asked for, and a server short of connection
slots: the engine neither deadlocks nor crashes, and says what it is doing.

`anyio.fail_after` below is a deadlock guard (a hang fails the test instead of
stalling the suite), not a speed assertion.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from archify_core import Engine, ledger
from archify_core.engine import AUTO_CONCURRENCY
from archify_core.errors import DatabaseConnectionError
from archify_core.events import Event, MigrationRetrying, Notice
from tests.fleet import execute
from tests.reliability.conftest import PrivateServer
from tests.reliability.helpers import (
    add_steps,
    build_fleet,
    check_fleet,
    tenant_versions,
    tracked_migrations,
)

DEADLOCK_GUARD = 30


@pytest.mark.parametrize("pool_size", [1, 2, 3])
async def test_pool_smaller_than_concurrency(dsn: str, tmp_path: Path, pool_size: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tracked_migrations(tmp_path / "m", 2)
    await build_fleet(dsn, folder, 30)
    events: list[Event] = []
    with anyio.fail_after(DEADLOCK_GUARD):
        async with Engine(dsn, folder, concurrency=16, pool_size=pool_size,
                          load_entry_points=False, on_event=events.append) as engine:
            report = await engine.migrate("all")
    assert report.ok
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("not the 16 asked for: the pool holds" in n for n in notices), notices
    versions = tenant_versions(folder)
    assert (await check_fleet(dsn, versions)).complete(len(versions)) == 30

    # again with every ledger to read (no digest): workers keep their connection only
    # while the pool has one more for the reads
    await execute(dsn, "DROP TABLE public.archify_ledger_digest")
    add_steps(folder, 1)
    monkeypatch.setattr(ledger, "FIRST_BATCH", 2)  # reads go on while workers work
    monkeypatch.setattr(ledger, "LEDGER_BATCH", 2)
    with anyio.fail_after(DEADLOCK_GUARD):
        async with Engine(dsn, folder, concurrency=16, pool_size=pool_size,
                          load_entry_points=False) as engine:
            assert (await engine.migrate("tenants")).applied_count() == 30
    versions = tenant_versions(folder)
    check = await check_fleet(dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 30, check.describe()


@asynccontextmanager
async def _role_database(server: PrivateServer, private_dsn: str) -> AsyncIterator[str]:
    """A DSN for a non-superuser owning the test database: it cannot use the slots
    reserved for superusers, as an application role would not."""
    role, password = f"app_{secrets.token_hex(3)}", secrets.token_hex(8)
    database = private_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
        yield server.dsn(database, user=role, password=password)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def _hog(dsn: str, leave_free: int, server: PrivateServer) -> list[asyncpg.Connection]:
    """Take every connection slot the role may use, then give `leave_free` back."""
    conns: list[asyncpg.Connection] = []
    while len(conns) <= server.max_connections:
        try:
            conns.append(await asyncpg.connect(dsn))
        except asyncpg.TooManyConnectionsError:
            break
    await _close(conns[len(conns) - leave_free:])
    del conns[len(conns) - leave_free:]
    await anyio.sleep(0.5)  # let the closed backends exit and free their slots
    return conns


async def _close(conns: list[asyncpg.Connection]) -> None:
    for conn in conns:
        await conn.close()


async def _migrate_short_of_slots(dsn: str, folder: Path, free: int, server: PrivateServer,
                                  **engine_options: Any) -> tuple[list[str], int]:
    """Migrate a 30-tenant fleet while other clients leave `free` slots: the notices, and
    the concurrency the engine settled on; the fleet must be complete."""
    await build_fleet(dsn, folder, 30)
    hogs = await _hog(dsn, free, server)
    events: list[Event] = []
    try:
        with anyio.fail_after(DEADLOCK_GUARD):
            async with Engine(dsn, folder, load_entry_points=False, on_event=events.append,
                              **engine_options) as engine:
                concurrency = engine.concurrency
                report = await engine.migrate("tenants")
    finally:
        await _close(hogs)
    notices = [e.message for e in events if isinstance(e, Notice)
               and not e.message.startswith("lint: ")]  # the example steps lint as unsafe
    assert report.ok, (notices, report.failed[:1])
    versions = tenant_versions(folder)
    assert (await check_fleet(dsn, versions)).complete(len(versions)) == 30
    return notices, concurrency


async def test_few_free_slots_lowers_concurrency_and_completes(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    folder = tracked_migrations(tmp_path / "m", 2)
    async with _role_database(private_server, private_dsn) as dsn:
        notices, _ = await _migrate_short_of_slots(dsn, folder, 3, private_server,
                                                   concurrency=8)
    assert any("not the 8 asked for: the server has" in n and "free connection slots (max_connections" in n for n in notices), notices


async def test_default_concurrency_is_sized_to_the_server(
    dsn: str, private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    """Left to the engine, the concurrency is AUTO_CONCURRENCY where the server has room
    (the suite's server: max_connections 100), and half of the free slots where it has
    not; nothing the user asked for was cut, so no notice."""
    folder = tracked_migrations(tmp_path / "m", 2)
    async with Engine(dsn, folder, load_entry_points=False) as engine:
        assert (engine.concurrency, engine.pool_size) == (AUTO_CONCURRENCY,
                                                          AUTO_CONCURRENCY + 1)
    async with _role_database(private_server, private_dsn) as role_dsn:
        # 7 slots free: the engine's first connection takes one, and half the rest is 3
        notices, concurrency = await _migrate_short_of_slots(role_dsn, folder, 7,
                                                             private_server)
    assert (concurrency, notices) == (3, [])


async def test_slots_taken_mid_rollout_are_retried_then_reported(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    """Another client grabs every slot after the engine started: workers cannot open
    their connections. The schemas are retried with backoff, and whatever never got a
    connection is reported by name; a re-run completes."""
    folder = tracked_migrations(tmp_path / "m", 2)
    async with _role_database(private_server, private_dsn) as dsn:
        await build_fleet(dsn, folder, 10)
        events: list[Event] = []
        with anyio.fail_after(DEADLOCK_GUARD):
            async with Engine(dsn, folder, concurrency=4, retries=1, retry_backoff=0.05,
                              load_entry_points=False, on_event=events.append) as engine:
                hogs = await _hog(dsn, 0, private_server)
                try:
                    report = await engine.migrate("tenants")
                finally:
                    await _close(hogs)
        assert not report.ok
        for result in report.failed:
            assert result.failure.sqlstate == "53300", result.failure
            assert result.failure.message.startswith("no free connection slot"), result.failure
            assert result.failure.attempts == 2
        assert any(isinstance(e, MigrationRetrying) and "no free connection slot" in e.reason
                   for e in events)
        async with Engine(dsn, folder, load_entry_points=False) as engine:
            assert (await engine.migrate("tenants")).ok
        versions = tenant_versions(folder)
        check = await check_fleet(dsn, versions)
        assert check.consistent and check.complete(len(versions)) == 10, check.describe()


async def test_no_free_slot_at_all_is_a_clear_connection_error(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    folder = tracked_migrations(tmp_path / "m", 1)
    async with _role_database(private_server, private_dsn) as dsn:
        hogs = await _hog(dsn, 0, private_server)
        try:
            with pytest.raises(DatabaseConnectionError, match="no free connection slots"):
                async with Engine(dsn, folder, load_entry_points=False):
                    pass
        finally:
            await _close(hogs)


async def test_two_rollouts_on_one_engine_share_its_pool_without_deadlock(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers keep their connection between schemas, but give it back before waiting for
    work: two rollouts reading ledgers on one small pool both finish."""
    folder = tracked_migrations(tmp_path / "m", 1)
    await build_fleet(dsn, folder, 40)
    async with Engine(dsn, folder, concurrency=2, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).ok
    await execute(dsn, "DROP TABLE public.archify_ledger_digest")  # every ledger is read
    add_steps(folder, 1)
    monkeypatch.setattr(ledger, "FIRST_BATCH", 2)
    monkeypatch.setattr(ledger, "LEDGER_BATCH", 2)
    reports = []
    with anyio.fail_after(DEADLOCK_GUARD):
        async with Engine(dsn, folder, concurrency=2, load_entry_points=False) as engine:

            async def rollout() -> None:
                reports.append(await engine.migrate("tenants"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(rollout)
                tg.start_soon(rollout)
    assert all(r.ok for r in reports)
    assert sum(r.applied_count() for r in reports) == 40  # each schema's step once
    versions = tenant_versions(folder)
    check = await check_fleet(dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 40, check.describe()
