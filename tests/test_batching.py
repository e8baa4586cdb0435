"""Several schemas per round trip (execution.apply_batch): each step still its own
transaction, and a failure is pinned on the schema and step that failed, never on its
neighbours in the batch. One worker (concurrency=1) so that plans queue up behind it
and go out in batches."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import pytest

from archify_core import ConfigurationError, Engine, Outcome, hookimpl
from archify_core.events import Event, MigrationRetrying
from tests.fleet import (
    add_migration,
    execute,
    fetchval,
    ledger_versions,
    migrated_fleet,
    on_every_pooled_connection,
    register_tenants,
    stale_digests,
)
from tests.plugin_fixtures.hook_order import HookOrder

TENANT_VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]
SLUGS = [f"t{i}" for i in range(8)]


async def test_a_batch_stops_at_its_failing_step_and_the_schemas_after_it_go_on(
    dsn: str, migrations_dir: Path
) -> None:
    """Every tenant needs four steps; t3's fourth fails. The steps before it (t0..t2, and
    t3's first three) committed in the batch; t3 keeps 002..005 and nothing of 006; the
    tenants after it, which the batch never reached, are migrated."""
    add_migration(migrations_dir, "006_copy_legacy", "tenant",
                  "CREATE TABLE archive (id int); INSERT INTO archive SELECT id FROM legacy;")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
    await register_tenants(dsn, SLUGS)
    for slug in SLUGS:
        if slug != "t3":
            await fetchval(dsn, f"CREATE TABLE tenant_{slug}.legacy (id int)")
    order = HookOrder()
    async with Engine(dsn, migrations_dir, concurrency=1, batch_size=8, plugins=[order],
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
        left = await on_every_pooled_connection(
            engine, "SELECT coalesce(current_setting('archify.batch_step', true), '')")
    assert set(left) == {""}
    assert order.batched() and order.paired()
    [failed] = report.failed
    assert failed.slug == "t3"
    assert (failed.failure.version, failed.failure.sqlstate) == ("006_copy_legacy", "42P01")
    assert [a.version for a in failed.applied] == TENANT_VERSIONS
    assert await ledger_versions(dsn, "tenant_t3") == TENANT_VERSIONS
    assert await fetchval(dsn, "SELECT to_regclass('tenant_t3.archive')") is None
    for result in report.schemas:
        if result.slug != "t3":
            assert result.outcome is Outcome.MIGRATED, result
            assert await ledger_versions(dsn, result.schema) == [*TENANT_VERSIONS,
                                                                 "006_copy_legacy"]
            assert await fetchval(dsn, f"SELECT to_regclass('{result.schema}.archive')")


@pytest.mark.parametrize("retries", [0, 2])
async def test_a_lock_timeout_in_a_batch_is_that_schemas_first_attempt(
    dsn: str, migrations_dir: Path, retries: int
) -> None:
    """The batch's attempt counts: with retries off the schema fails after one attempt,
    with retries it is tried again alone once the lock is gone. Its neighbours commit."""
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    add_migration(migrations_dir, "006_add_flag", "tenant",
                  "ALTER TABLE users ADD COLUMN flag int;")
    app = await asyncpg.connect(dsn)
    await app.execute("BEGIN; SELECT count(*) FROM tenant_t4.users")
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, MigrationRetrying):
            released.set()

    released = anyio.Event()

    async def release() -> None:
        await released.wait()
        await app.close()

    order = HookOrder()
    try:
        async with (
            Engine(dsn, migrations_dir, concurrency=1, batch_size=8, lock_timeout=0.2,
                   retries=retries, retry_backoff=0.2, plugins=[order], on_event=on_event,
                   load_entry_points=False) as engine,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(release)
            report = await engine.migrate("tenants")
            released.set()
    finally:
        await app.close()
    assert order.batched()
    by_slug = {r.slug: r for r in report.schemas}
    retried = [(e.schema, e.attempt) for e in events if isinstance(e, MigrationRetrying)]
    if retries:
        assert report.ok
        assert retried == [("tenant_t4", 1)]
    else:
        assert retried == []
        failure = by_slug["t4"].failure
        assert failure.sqlstate == "55P03" and failure.attempts == 1
        assert "retries are off" in failure.message
    for slug in SLUGS:
        expected = retries > 0 or slug != "t4"
        assert ("006_add_flag" in await ledger_versions(dsn, f"tenant_{slug}")) == expected
        assert by_slug[slug].outcome is (Outcome.MIGRATED if expected else Outcome.FAILED)


class LedgerWrittenMeanwhile:
    """Another runner records t2's migration after the plan was made (while the batch is
    being put together): the batch's t2 transaction meets the ledger row and stops."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @hookimpl
    async def archify_before_schema(self, schema: str) -> None:
        if schema == "tenant_t2":
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute("INSERT INTO tenant_t2.schema_migrations (version)"
                                   " VALUES ('006_count_runs')")
            finally:
                await conn.close()


async def test_a_step_another_runner_did_stops_the_batch_and_is_not_applied_again(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    add_migration(migrations_dir, "006_count_runs", "tenant",
                  "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);")
    order = HookOrder()
    async with Engine(dsn, migrations_dir, concurrency=1, batch_size=8,
                      plugins=[order, LedgerWrittenMeanwhile(dsn)],
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
    assert report.ok and order.batched()
    by_slug = {r.slug: r for r in report.schemas}
    assert by_slug["t2"].outcome is Outcome.UP_TO_DATE and not by_slug["t2"].applied
    assert await fetchval(dsn, "SELECT to_regclass('tenant_t2.runs')") is None
    for slug in SLUGS:
        if slug != "t2":
            assert by_slug[slug].outcome is Outcome.MIGRATED
            assert await fetchval(dsn, f"SELECT count(*) FROM tenant_{slug}.runs") == 1


async def test_max_failures_skips_the_schemas_a_failed_batch_never_reached(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    add_migration(migrations_dir, "006_fails_on_t1", "tenant",
                  "DO $$ BEGIN IF current_schema() = 'tenant_t1' THEN"
                  " RAISE EXCEPTION 'no'; END IF; END $$; CREATE TABLE done (n int);")
    async with Engine(dsn, migrations_dir, concurrency=1, batch_size=8,
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants", max_failures=1)
    outcomes = {r.slug: r.outcome for r in report.schemas}
    assert outcomes["t1"] is Outcome.FAILED and report.stopped_early
    for slug, outcome in outcomes.items():
        ran = await fetchval(dsn, f"SELECT to_regclass('tenant_{slug}.done')") is not None
        assert ran == (outcome is Outcome.MIGRATED)
        if outcome is Outcome.SKIPPED:
            assert "006_fails_on_t1" not in await ledger_versions(dsn, f"tenant_{slug}")
    assert Outcome.SKIPPED in outcomes.values()


async def test_batch_size_one_sends_one_schema_at_a_time(dsn: str, migrations_dir: Path) -> None:
    order = HookOrder()
    async with Engine(dsn, migrations_dir, concurrency=1, batch_size=1, plugins=[order],
                      load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await register_tenants(dsn, SLUGS[:4])
        assert (await engine.migrate("tenants")).ok
    assert not order.batched() and order.paired()
    with pytest.raises(ConfigurationError, match="batch_size must be at least 1"):
        Engine(dsn, migrations_dir, batch_size=0)


@pytest.mark.parametrize("retries", [0, 3])
async def test_a_connection_lost_mid_batch_is_pinned_on_its_step(
    dsn: str, migrations_dir: Path, retries: int
) -> None:
    """t3's backend dies inside the batch. The ledgers, read on a new connection, say
    what committed: t1 and t2, reported migrated. The loss is t3's first attempt: retried
    (and applied once), or with retries off t3 fails by name. The schemas after it go on."""
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    await execute(dsn, "CREATE SEQUENCE public.kill_once")
    add_migration(migrations_dir, "006_count_runs", "tenant",
                  "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);"
                  "SELECT CASE WHEN current_schema() = 'tenant_t3'"
                  " AND nextval('public.kill_once') = 1"
                  " THEN pg_terminate_backend(pg_backend_pid()) END;")
    order = HookOrder()
    events: list[Event] = []
    async with Engine(dsn, migrations_dir, concurrency=1, batch_size=8, plugins=[order],
                      retries=retries, retry_backoff=0.01, on_event=events.append,
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
    assert order.batched() and order.paired()
    by_slug = {r.slug: r for r in report.schemas}
    retried = [(e.schema, e.attempt) for e in events if isinstance(e, MigrationRetrying)]
    if retries:
        assert report.ok and retried == [("tenant_t3", 1)]
    else:
        failure = by_slug["t3"].failure
        assert failure.attempts == 1 and "connection lost" in failure.message, failure
        assert retried == []
    for slug in SLUGS:
        applied = retries > 0 or slug != "t3"
        assert by_slug[slug].outcome is (Outcome.MIGRATED if applied else Outcome.FAILED)
        assert ("006_count_runs" in await ledger_versions(dsn, f"tenant_{slug}")) == applied
        runs = await fetchval(dsn, f"SELECT to_regclass('tenant_{slug}.runs')")
        assert (runs is not None) == applied
        if applied:
            assert await fetchval(dsn, f"SELECT count(*) FROM tenant_{slug}.runs") == 1
    assert await stale_digests(dsn) == []
