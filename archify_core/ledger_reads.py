"""One statement reading many ledgers, when tenants may be dropped while it runs.

The schemas to read come from a catalog query made earlier; a tenant dropped
since (or only its ledger) makes the whole statement fail with 42P01. The
statement is then made again without the ledgers that are gone, instead of the
read failing, and the caller learns which they were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import asyncpg

from .quoting import LEDGER_TABLE

Queryable = asyncpg.Connection | asyncpg.Pool  # both have fetch/fetchval/fetchrow


async def read_ledgers(
    conn: Queryable, schemas: Mapping[int, str], query: Callable[[Sequence[int]], str]
) -> tuple[list[asyncpg.Record], dict[int, bool]]:
    """Fetch `query(keys)`, one statement reading the ledger of `schemas[key]` for each
    key. Returns its rows and the keys left out because their ledger no longer exists
    (key -> whether the schema itself still does). Another 42P01 is raised as it is."""
    live = list(schemas)
    gone: dict[int, bool] = {}
    while live:
        try:
            return await conn.fetch(query(live)), gone
        except asyncpg.UndefinedTableError:
            vanished = await _gone(conn, [(key, schemas[key]) for key in live])
            if not vanished:  # not a dropped ledger: the error is the answer
                raise
            gone.update(vanished)
            live = [key for key in live if key not in vanished]  # shorter each time
    return [], gone


async def _gone(conn: Queryable, keyed: Sequence[tuple[int, str]]) -> dict[int, bool]:
    """Of these schemas, those whose ledger no longer exists: key -> whether the schema
    itself still does."""
    rows = await conn.fetch(
        "SELECT u.i, to_regnamespace(quote_ident(u.schema)) IS NOT NULL AS exists"
        " FROM unnest($1::int[], $2::text[]) AS u(i, schema)"
        f" WHERE to_regclass(quote_ident(u.schema) || '.{LEDGER_TABLE}') IS NULL",
        [key for key, _ in keyed], [schema for _, schema in keyed])
    return {row["i"]: row["exists"] for row in rows}
