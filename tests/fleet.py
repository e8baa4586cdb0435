"""Test helpers for building fleets quickly and reading the database's state."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import anyio
import asyncpg

from archify_core import Engine, digest
from archify_core.sql import quote_ident, quote_literal


async def register_tenants(dsn: str, slugs: Iterable[str]) -> None:
    """Create empty tenant schemas and their registry rows in one round trip
    (what `create_tenant(migrate=False)` does, in bulk, for big fleets)."""
    parts = []
    for slug in slugs:
        schema = f"tenant_{slug}"
        parts.append(f"CREATE SCHEMA {quote_ident(schema)};")
        parts.append(
            "INSERT INTO public.tenants (slug, name, schema_name) VALUES "
            f"({quote_literal(slug)}, {quote_literal(slug)}, {quote_literal(schema)});"
        )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("\n".join(parts))
    finally:
        await conn.close()


async def ledger_versions(dsn: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT version FROM {quote_ident(schema)}.schema_migrations ORDER BY version"
        )
    finally:
        await conn.close()
    return [r["version"] for r in rows]


async def fetchval(dsn: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def column_exists(dsn: str, schema: str, table: str, column: str) -> bool:
    return bool(await fetchval(
        dsn,
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)",
        schema, table, column,
    ))


def keep_only(folder: Path, *prefixes: str) -> None:
    """Remove every migration file whose number is not in `prefixes`."""
    for path in folder.glob("*.py"):
        if not path.name.startswith(prefixes):
            path.unlink()


def add_migration(folder: Path, version: str, scope: str, sql: str,
                  downgrade: str | None = None) -> Path:
    """Write a migration file in the guide's format."""
    down = f"\nDOWNGRADE_SQL = {downgrade!r}\n" if downgrade else ""
    path = folder / f"{version}.py"
    path.write_text(
        f'"""\nTest migration\n\n# MIGRATION_SCOPE: {scope}\n# MIGRATION_VERSION: {version}\n'
        f'# MIGRATION_DESCRIPTION: {version}\n"""\n\nUPGRADE_SQL = {sql!r}\n{down}'
    )
    return path


def copy_example(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


async def execute(dsn: str, *scripts: str) -> None:
    """Run SQL scripts one after another on one connection (each may hold several
    statements: the simple query protocol)."""
    conn = await asyncpg.connect(dsn)
    try:
        for script in scripts:
            await conn.execute(script)
    finally:
        await conn.close()


def write_file(folder: Path, name: str, text: str | bytes) -> None:
    """Write a migration file as text, or as raw bytes (to test encodings)."""
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


async def digest_rows(dsn: str) -> set[str]:
    """The schemas with a digest row that names their ledger."""
    conn = await asyncpg.connect(dsn)
    try:
        return await digest.tracked(conn)
    finally:
        await conn.close()


async def stale_digests(dsn: str) -> list[str]:
    """The schemas whose digest disagrees with their ledger (digest.stale)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await digest.stale(conn)
    finally:
        await conn.close()


async def migrated_fleet(dsn: str, migrations: Path, slugs: list[str]) -> None:
    """public migrated, then `slugs` registered and every tenant migration applied."""
    async with Engine(dsn, migrations, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await register_tenants(dsn, slugs)
        assert (await engine.migrate("tenants")).ok


async def on_every_pooled_connection(engine: Engine, query: str) -> list[object]:
    """`query`'s value on each connection of the engine's pool (all held at once, so
    each is a different one)."""
    connections = [await engine.pool.acquire() for _ in range(engine.pool_size)]
    try:
        return [await conn.fetchval(query) for conn in connections]
    finally:
        for conn in connections:
            await engine.pool.release(conn)


async def waiting_on_a_lock(conn: asyncpg.Connection, pid: int, seconds: float = 10) -> None:
    """Return once backend `pid` waits on a lock (polled through `conn`); fail after
    `seconds`."""
    for _ in range(int(seconds / 0.01)):
        if await conn.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                               " WHERE pid = $1", pid):
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"backend {pid} did not wait on a lock within {seconds} s")
