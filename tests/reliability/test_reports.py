"""The report of a run tells what the run did, whatever went wrong during it.

A broken migration behind a valid one in a batch is blamed on itself, in every
schema and at every position of a batch; a terminated backend keeps the server's
reason; and after a lost connection, what committed is reported as applied.
Each test compares the report with the ledgers, schema by schema.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import pytest

from archify_core import Engine, Outcome, RolloutReport
from archify_core.sql import quote_ident
from tests.fleet import add_migration, register_tenants
from tests.reliability.helpers import (
    build_fleet,
    check_fleet,
    tenant_versions,
    tracked_migrations,
)
from tests.reliability.test_connection_faults import _terminate

GOOD, BROKEN = "060_good", "061_broken"


async def ledgers(dsn: str, schemas: list[str]) -> dict[str, set[str]]:
    """Each schema's ledger versions (none for a schema without a ledger yet)."""
    conn = await asyncpg.connect(dsn)
    try:
        present = set(await conn.fetchval(
            "SELECT coalesce(array_agg(s), '{}') FROM unnest($1::text[]) s"
            " WHERE to_regclass(quote_ident(s) || '.schema_migrations') IS NOT NULL", schemas))
        query = "\nUNION ALL\n".join(
            f"SELECT {i} AS i, version::text FROM {quote_ident(s)}.schema_migrations"
            for i, s in enumerate(schemas) if s in present)
        rows = await conn.fetch(query) if query else []
    finally:
        await conn.close()
    found: dict[str, set[str]] = {s: set() for s in schemas}
    for i, version in rows:
        found[schemas[i]].add(version)
    return found


async def assert_report_matches_ledgers(
    dsn: str, report: RolloutReport, before: dict[str, set[str]]
) -> dict[str, set[str]]:
    """Every schema's ledger holds what it held before plus exactly what the report says
    this run applied there; a failed migration is not in its ledger."""
    schemas = [r.schema for r in report.schemas if r.schema != "public"]
    after = await ledgers(dsn, schemas)
    for result in report.schemas:
        if result.schema == "public":
            continue
        applied = {a.version for a in result.applied}
        assert after[result.schema] == before.get(result.schema, set()) | applied, (
            result.schema, sorted(after[result.schema]), result.to_dict())
        if result.failure is not None and result.failure.version is not None:
            assert result.failure.version not in after[result.schema], result.to_dict()
    return after


@pytest.mark.parametrize("batch_size", [2, 5, 8])
async def test_a_broken_migration_behind_a_valid_one_is_blamed_on_itself(
    dsn: str, migrations_dir: Path, batch_size: int
) -> None:
    """30 tenants, 060 valid and 061 broken (a syntax error, which makes the server refuse
    a whole batched string before running any of it). A third of the tenants have 060
    already, so the broken step sits at every position of the batches."""
    slugs = [f"t{i:02d}" for i in range(30)]
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await register_tenants(dsn, slugs)
        assert (await engine.migrate("tenants")).ok
    add_migration(migrations_dir, GOOD, "tenant", "CREATE TABLE good (id int);")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate([s for s in slugs if int(s[1:]) % 3 == 0])).ok
    add_migration(migrations_dir, BROKEN, "tenant",
                  "CREATE TABLE broken (id int);\nSELEC broken FROM;")
    schemas = [f"tenant_{s}" for s in slugs]
    before = await ledgers(dsn, schemas)

    async with Engine(dsn, migrations_dir, concurrency=2, batch_size=batch_size,
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants")

    after = await assert_report_matches_ledgers(dsn, report, before)
    assert len(report.failed) == 30
    for result in report.schemas:
        had_good = int(result.slug[1:]) % 3 == 0
        assert result.outcome is Outcome.FAILED
        assert result.failure.version == BROKEN, result.to_dict()
        assert 'syntax error at or near "SELEC"' in result.failure.message
        assert [a.version for a in result.applied] == ([] if had_good else [GOOD])
        assert GOOD in after[result.schema] and BROKEN not in after[result.schema]


async def test_a_terminated_backend_keeps_the_servers_reason(dsn: str, tmp_path: Path) -> None:
    """--retries 0, backends terminated while batches run: each failure says what the
    server said, and the report matches the ledgers."""
    folder = tracked_migrations(tmp_path / "m", 3, sleep=0.05)
    slugs = await build_fleet(dsn, folder, 40)
    schemas = [f"tenant_{s}" for s in slugs]
    before = {s: set() for s in schemas}

    async with (
        Engine(dsn, folder, concurrency=4, retries=0, load_entry_points=False) as engine,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_terminate, dsn, 3)
        report = await engine.migrate("tenants")
        tg.cancel_scope.cancel()

    assert report.failed, "no backend was terminated mid-migration"
    for result in report.failed:
        assert result.failure.message.startswith(
            "connection lost: the server closed the connection (terminating connection due "
            "to administrator command, SQLSTATE 57P01)"), result.failure
        assert "released back to the pool" not in result.failure.message
        assert result.failure.sqlstate == "57P01"
    await assert_report_matches_ledgers(dsn, report, before)
    check = await check_fleet(dsn, tenant_versions(folder))
    assert check.consistent, check.describe()


async def test_after_terminated_backends_every_commit_is_in_the_report(
    dsn: str, tmp_path: Path
) -> None:
    """Backends terminated mid-batch, with retries: each lost step's ledger decides
    whether it committed, so every migration this run applied is in its report (never
    left out as "done by another runner"), and the report matches the ledgers."""
    folder = tracked_migrations(tmp_path / "m", 2, sleep=0.02)
    slugs = await build_fleet(dsn, folder, 24)
    before: dict[str, set[str]] = {f"tenant_{s}": set() for s in slugs}

    async with (
        Engine(dsn, folder, concurrency=3, retries=3, retry_backoff=0.05,
               load_entry_points=False) as engine,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_terminate, dsn, 4)
        report = await engine.migrate("tenants")
        tg.cancel_scope.cancel()

    assert report.ok, [r.failure for r in report.failed]
    versions = tenant_versions(folder)
    for result in report.schemas:
        assert [a.version for a in result.applied] == versions, result.to_dict()
    await assert_report_matches_ledgers(dsn, report, before)
