"""Reading the fleet's ledgers: batches read ahead on several connections, delivered in
order, every tenant exactly once, stopped cleanly, errors surfaced as themselves."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import pytest

from archify_core import Engine, ledger
from archify_core.ledger import _waves
from archify_core.planning import LedgerShape
from tests.fleet import execute, keep_only, register_tenants

SLUGS = [f"t{i:02d}" for i in range(23)]


async def _fleet(dsn: str, migrations_dir: Path) -> None:
    """23 tenants; tenant i has 002 applied when i is even, nothing when odd."""
    keep_only(migrations_dir, "001", "002")
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, SLUGS)
        assert (await engine.migrate(SLUGS[0::2])).ok


def test_waves_start_with_a_short_chunk_then_read_several_batches_at_once() -> None:
    states = list(range(1000))
    waves = _waves(states, 250, 4)  # type: ignore[arg-type]
    assert [[len(c) for c in w] for w in waves] == [[32], [250, 250, 250, 218]]
    assert [s for w in waves for c in w for s in c] == states
    assert [[len(c) for c in w] for w in _waves(list(range(40)), 8, 2)] == [  # type: ignore[arg-type]
        [8], [8, 8], [8, 8]]
    assert _waves([], 250, 4) == []


@pytest.mark.parametrize("batch", [1, 4, 250])
async def test_batches_cover_every_tenant_once_in_order(
    dsn: str, migrations_dir: Path, batch: int
) -> None:
    await _fleet(dsn, migrations_dir)
    async with Engine(dsn, migrations_dir) as engine:
        states = await ledger.read_tenant_states(engine.pool, None)
        seen = []
        async with ledger.tenant_state_batches(engine.pool, states, batch) as batches:
            async for chunk in batches:
                assert 0 < len(chunk) <= max(batch, 1)
                seen.extend(chunk)

    assert [s.slug for s in seen] == SLUGS
    for i, state in enumerate(seen):
        assert list(state.applied) == (["002_create_tenant_tables"] if i % 2 == 0 else [])


async def test_stopping_early_stops_the_reads_and_frees_the_pool(
    dsn: str, migrations_dir: Path
) -> None:
    with anyio.fail_after(30):  # a leaked connection fails the test instead of hanging it
        await _fleet(dsn, migrations_dir)
        async with Engine(dsn, migrations_dir, concurrency=2) as engine:
            states = await ledger.read_tenant_states(engine.pool, None)
            async with ledger.tenant_state_batches(engine.pool, states, 2) as batches:
                async for _ in batches:
                    break
            # every connection is back: a status over the whole fleet still runs
            status = await engine.status()
    assert len(status.tenants) == len(SLUGS)


async def test_a_failing_ledger_read_raises_the_servers_error(
    dsn: str, migrations_dir: Path
) -> None:
    await _fleet(dsn, migrations_dir)
    async with Engine(dsn, migrations_dir) as engine:
        states = await ledger.read_tenant_states(engine.pool, None)
        # the ledger changes shape after the catalog was read: its batch read fails
        await execute(dsn, "ALTER TABLE tenant_t20.schema_migrations RENAME version TO v")
        with pytest.raises(asyncpg.UndefinedColumnError, match="version"):
            async with ledger.tenant_state_batches(engine.pool, states, 4) as batches:
                async for _ in batches:
                    pass


async def test_a_tenant_dropped_after_the_catalog_read_is_reported_missing_not_an_error(
    dsn: str, migrations_dir: Path
) -> None:
    """Between the catalog query and a ledger batch, a tenant is dropped (or only its
    ledger): the batch marks it missing and reads the others, instead of failing."""
    await _fleet(dsn, migrations_dir)
    async with Engine(dsn, migrations_dir) as engine:
        states = await ledger.read_tenant_states(engine.pool, None)  # no digest: read all
        await execute(dsn, "DROP SCHEMA tenant_t02 CASCADE",
                      "DROP TABLE tenant_t04.schema_migrations")
        read = {s.slug: s for s in await ledger.with_applied(engine.pool, states)}
    assert not read["t02"].exists and read["t02"].ledger is LedgerShape.MISSING
    assert read["t04"].exists and read["t04"].ledger is LedgerShape.MISSING
    assert not read["t02"].applied and not read["t04"].applied
    assert list(read["t06"].applied) == ["002_create_tenant_tables"]
    assert list(read["t00"].applied) == ["002_create_tenant_tables"]
