"""Test helpers for building fleets quickly and reading the database's state."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import asyncpg

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


async def digest_rows(dsn: str) -> dict[str, tuple[int, int]]:
    """Every trusted digest row (its ledger is the one in its schema): schema ->
    (fingerprint, rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0]: (r[1], r[2]) for r in await conn.fetch(_TRUSTED_DIGESTS)}
    finally:
        await conn.close()


async def wrong_digests(conn: asyncpg.Connection) -> list[str]:
    """The schemas whose digest row, though it names their ledger, disagrees with what the
    ledger holds (computed from its rows with the server's own hash function)."""
    if not await conn.fetchval("SELECT to_regclass('public.archify_ledger_digest') IS NOT NULL"):
        return []
    digests = await conn.fetch(_TRUSTED_DIGESTS)
    if not digests:
        return []
    query = "\nUNION ALL\n".join(
        f"SELECT {i} AS i, coalesce(bit_xor(public.archify_ledger_row_hash(version, checksum)),"
        f" 0) AS fingerprint, count(*)::int AS applied FROM {quote_ident(d[0])}.schema_migrations"
        for i, d in enumerate(digests))
    return sorted(digests[r[0]][0] for r in await conn.fetch(query)
                  if (r[1], r[2]) != (digests[r[0]][1], digests[r[0]][2]))


_TRUSTED_DIGESTS = (
    "SELECT d.schema_name, d.fingerprint, d.applied FROM public.archify_ledger_digest d "
    "JOIN pg_class c ON c.oid = d.ledger AND c.relname = 'schema_migrations' "
    "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = d.schema_name "
    "ORDER BY d.schema_name"
)
