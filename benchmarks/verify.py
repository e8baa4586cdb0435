"""Checking a tool's result before its time counts: every tenant schema has exactly
the expected ledger versions and exactly the objects those migrations create.

The expected objects come from a reference schema built by hand inside a
transaction that is rolled back, so no list of objects is written down twice.
"""

from __future__ import annotations

import asyncpg

from archify_core import digest
from archify_core.migration import MigrationSet
from archify_core.sql import quote_ident

from .fleet import applied_sql

REF_SCHEMA = "bench_reference"
_FINGERPRINTS = """
SELECT n.nspname AS schema,
       coalesce(string_agg(c.relname::text || ':' || c.relkind::text
                           || '(' || coalesce(a.cols, '') || ')',
                           ',' ORDER BY c.relname), '') AS fingerprint
FROM pg_namespace n
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname <> 'schema_migrations'
                     AND c.relname <> 'schema_migrations_pkey'
LEFT JOIN LATERAL (SELECT string_agg(attname, ' ' ORDER BY attnum) AS cols FROM pg_attribute
                   WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped) a ON true
WHERE n.nspname = ANY($1::text[])
GROUP BY n.nspname
"""


class VerificationError(AssertionError):
    pass


async def reference_fingerprint(conn: asyncpg.Connection, migrations: MigrationSet,
                                versions: tuple[str, ...]) -> str:
    todo = [m for m in migrations if m.version in versions]
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(REF_SCHEMA)};"
                           f"CREATE TABLE {quote_ident(REF_SCHEMA)}.schema_migrations"
                           " (version text PRIMARY KEY, checksum text);"
                           + applied_sql(REF_SCHEMA, todo))
        return await conn.fetchval(
            "SELECT fingerprint FROM (" + _FINGERPRINTS + ") f", [REF_SCHEMA])
    finally:
        await tx.rollback()


async def verify_fleet(dsn: str, migrations: MigrationSet, versions: tuple[str, ...],
                       schemas: list[str], *, digests: bool = False) -> None:
    """Raise VerificationError unless every schema in `schemas` (and no other tenant
    registered) holds exactly `versions` and their objects; with `digests` (after an
    archify run: the baselines do not keep them), also unless every schema's ledger
    digest is there and agrees with its ledger."""
    conn = await asyncpg.connect(dsn)
    try:
        expected = await reference_fingerprint(conn, migrations, versions)
        registered = await conn.fetchval("SELECT count(*) FROM public.tenants")
        if registered != len(schemas):
            raise VerificationError(f"{registered} registered tenants, expected {len(schemas)}")
        rows = await conn.fetch(_FINGERPRINTS, schemas)
        if len(rows) != len(schemas):
            raise VerificationError(f"{len(schemas) - len(rows)} tenant schemas are missing")
        wrong = [r["schema"] for r in rows if r["fingerprint"] != expected]
        if wrong:
            got = next(r["fingerprint"] for r in rows if r["schema"] == wrong[0])
            raise VerificationError(f"{len(wrong)} schemas have other objects, e.g. {wrong[0]}:"
                                    f" {got!r} instead of {expected!r}")
        want = sorted(versions)
        for start in range(0, len(schemas), 1000):
            part = schemas[start:start + 1000]
            sql = "\nUNION ALL\n".join(
                f"SELECT {i} AS i, array_agg(version::text ORDER BY version) AS v"
                f" FROM {quote_ident(s)}.schema_migrations" for i, s in enumerate(part))
            for row in await conn.fetch(sql):
                if sorted(row["v"] or []) != want:
                    raise VerificationError(f"{part[row['i']]} has ledger {row['v']}, "
                                            f"expected {want}")
        if digests:
            kept = await digest.tracked(conn)
            missing = [s for s in schemas if s not in kept]
            stale = await digest.stale(conn)
            if missing or stale:
                raise VerificationError(f"{len(missing)} schemas have no digest, "
                                        f"{len(stale)} a wrong one, e.g. {(missing + stale)[0]}")
    finally:
        await conn.close()
