"""The server stopped in the middle of a rollout (`pg_ctl stop -m immediate`, as a crash or
a failover does), and started again a few seconds later, or not in time.

The workers wait for the server together: one line says it was lost, one that it
answers again (or that archify gave up on it). The report matches the ledgers: what
committed before the stop is reported applied, and nothing is blamed on a migration
that did not fail. Run through the CLI, no traceback reaches the user and the DSN's
password appears nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.abc
import asyncpg

from archify_core import Engine, Notice, Outcome
from archify_core.events import Event
from tests.reliability.conftest import PrivateServer
from tests.reliability.helpers import (
    PYTHON,
    ROOT,
    build_fleet,
    check_fleet,
    clean_env,
    tenant_versions,
    tracked_migrations,
)
from tests.reliability.test_connection_faults import _wait_for_active_migration
from tests.reliability.test_reports import assert_report_matches_ledgers, ledgers


@contextmanager
def started_again(server: PrivateServer) -> Iterator[None]:
    """Whatever the test does, the suite's private server is running after it."""
    try:
        yield
    finally:
        if not server.running():
            server.start()


async def crash_safe(dsn: str) -> None:
    """The private server runs with synchronous_commit off, which a crash (an immediate
    stop) may take the last commits back from: not what these tests measure."""
    conn = await asyncpg.connect(dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    finally:
        await conn.close()


async def _stop_for(server: PrivateServer, dsn: str, seconds: float | None) -> None:
    """Once a migration is under way, stop the server at once; start it `seconds` later
    (None: leave it stopped)."""
    await _wait_for_active_migration(dsn)
    await anyio.to_thread.run_sync(server.stop)
    if seconds is not None:
        await anyio.sleep(seconds)
        await anyio.to_thread.run_sync(server.start)


def _notices(events: list[Event], text: str) -> list[str]:
    return [e.message for e in events if isinstance(e, Notice) and text in e.message]


async def test_a_rollout_rides_out_a_server_restart(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    folder = tracked_migrations(tmp_path / "m", 3, sleep=0.05)
    await crash_safe(private_dsn)
    slugs = await build_fleet(private_dsn, folder, 60)
    versions = tenant_versions(folder)
    events: list[Event] = []
    with started_again(private_server):
        async with (
            Engine(private_dsn, folder, concurrency=6, server_wait=30,
                   load_entry_points=False, on_event=events.append) as engine,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_stop_for, private_server, private_dsn, 3.0)
            report = await engine.migrate("tenants")

    assert report.ok, [r.failure for r in report.failed]
    assert report.count(Outcome.MIGRATED) == 60
    for result in report.schemas:  # what committed before the stop is in the report too
        assert [a.version for a in result.applied] == versions, result.to_dict()
    await assert_report_matches_ledgers(private_dsn, report,
                                        {f"tenant_{s}": set() for s in slugs})
    [lost] = _notices(events, "lost the server")
    assert private_server.password not in lost and "127.0.0.1" in lost
    assert len(_notices(events, "answers again")) == 1
    assert not _notices(events, "gave up")
    check = await check_fleet(private_dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 60, check.describe()


async def test_a_server_that_stays_away_is_given_up_on_once(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    folder = tracked_migrations(tmp_path / "m", 3, sleep=0.05)
    await crash_safe(private_dsn)
    slugs = await build_fleet(private_dsn, folder, 200)
    versions = tenant_versions(folder)
    events: list[Event] = []
    with started_again(private_server):
        async with (
            Engine(private_dsn, folder, concurrency=6, server_wait=2,
                   load_entry_points=False, on_event=events.append) as engine,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_stop_for, private_server, private_dsn, None)
            report = await engine.migrate("tenants")
        private_server.start()

    assert not report.ok and report.stopped_early
    assert len(_notices(events, "lost the server")) == 1
    assert len(_notices(events, "gave up on the server")) == 1
    skipped = [r for r in report.schemas if r.outcome is Outcome.SKIPPED]
    assert skipped, "a server given up on must not be tried for every schema"
    assert all(r.skipped_because == "the server could not be reached" for r in skipped)
    for result in report.failed:
        message = result.failure.message
        assert message.startswith("connection lost: "), message
        assert "cannot reach the server" in message or "closed the connection" in message
        assert "Errno" not in message, message
    # The report says what it knows: a failure it could not confirm says so; everything
    # else matches the ledgers exactly.
    unsure = {r.schema for r in report.failed if "could not be asked" in r.failure.message}
    report.schemas[:] = [r for r in report.schemas if r.schema not in unsure]
    await assert_report_matches_ledgers(private_dsn, report,
                                        {f"tenant_{s}": set() for s in slugs})
    check = await check_fleet(private_dsn, versions)
    assert check.consistent, check.describe()

    async with Engine(private_dsn, folder, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).ok  # a re-run finishes the job
    check = await check_fleet(private_dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 200, check.describe()


async def test_through_the_cli_a_restart_is_two_lines_and_the_report_is_true(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    """`archify all --json` while the server is stopped for 3 s: exit 0, no traceback, one
    line when it is lost and one when it answers again, no password anywhere, and the
    JSON report says exactly what the ledgers hold."""
    folder = tracked_migrations(tmp_path / "m", 3, sleep=0.05)
    await crash_safe(private_dsn)
    slugs = await build_fleet(private_dsn, folder, 60)
    versions = tenant_versions(folder)
    command = [PYTHON, "-m", "archify_core", "--dsn", private_dsn, "--migrations", str(folder),
               "--concurrency", "6", "all", "--json"]
    with started_again(private_server):
        process = await anyio.open_process(command, cwd=ROOT, env=clean_env())
        async with process:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_for, private_server, private_dsn, 3.0)
                out, err = await _read_both(process)
            code = await process.wait()
    stdout, stderr = out.decode(), err.decode()
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert private_server.password not in stdout + stderr
    assert stderr.count("lost the server at") == 1, stderr
    assert stderr.count("answers again") == 1, stderr
    report = json.loads(stdout)
    after = await ledgers(private_dsn, [f"tenant_{s}" for s in slugs])
    for entry in report["schemas"]:
        if entry["schema"] != "public":
            assert sorted(after[entry["schema"]]) == sorted(
                a["version"] for a in entry["applied"]), entry
    check = await check_fleet(private_dsn, versions)
    assert check.consistent and check.complete(len(versions)) == 60, check.describe()


async def _read_both(process: anyio.abc.Process) -> tuple[bytes, bytes]:
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    async def drain(stream: anyio.abc.ByteReceiveStream | None, into: list[bytes]) -> None:
        assert stream is not None
        async for chunk in stream:
            into.append(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, process.stdout, chunks["out"])
        tg.start_soon(drain, process.stderr, chunks["err"])
    return b"".join(chunks["out"]), b"".join(chunks["err"])
