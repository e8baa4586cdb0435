"""Reading what every schema has applied: the registry, the catalog and the ledgers.

The fleet is read in one query whatever its size: the catalog query gives every
tenant's schema, ledger shape and, where the ledger is tracked, its digest
(digest.py), which says what the ledger holds without opening it. Ledgers whose
digest matches no known state (or that are not tracked) are then read
themselves, in batches of UNION ALL (each batch is one statement, so its table
locks are released before the next). Nothing here writes.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio
import asyncpg

from . import digest
from .errors import RegistryMissingError, sole_error
from .ledger_reads import Queryable, read_ledgers
from .migration import Scope
from .planning import PUBLIC_SCHEMA, LedgerShape, SchemaState
from .quoting import REGISTRY_TABLE
from .sql import LEDGER_TABLE, quote_ident
from .tenants import SCHEMA_PREFIX, registry_problem

# Schemas per ledger batch. A batch locks each ledger and its index until the
# statement ends: 500 locks, or 2,000 with LEDGER_READERS batches at once, well
# under the shared lock table (max_locks_per_transaction 64 x ~110 slots by default).
LEDGER_BATCH = 250
# The first batch is short so that a rollout starts work while the rest is read.
FIRST_BATCH = 32
# Batches read at once when the reads go through a pool (see tenant_state_batches):
# at 10,000 tenants on 2 cores, 1/2/4/8 readers took 1.46-1.66/0.92/0.78-0.99/0.78-0.81 s
# (docs/performance.md).
LEDGER_READERS = 4


# Whether a ledger's versions are unique (the guide's primary key, or the index archify
# adds when adopting a ledger): the ledger row written first stops a second runner only
# then, so a ledger without it is adopted again (LedgerShape.GUIDE). Joined per ledger
# (pg_index by indrelid); `gate` skips ledgers with a trusted digest, which archify
# adopted when it started tracking them (0.15 -> 0.09 s for the catalog query at
# 10,000 tenants).
_UNIQUE_VERSION = """
LEFT JOIN LATERAL (SELECT true AS unique_version FROM pg_index i
                   JOIN pg_attribute v ON v.attrelid = i.indrelid AND v.attnum = i.indkey[0]
                   WHERE {gate}i.indrelid = c.oid AND i.indisunique AND i.indnatts = 1
                     AND v.attname = 'version' LIMIT 1) u ON true
"""

_SCHEMA_CATALOG = f"""
SELECT n.oid IS NOT NULL AS exists,
       c.oid IS NOT NULL AS has_ledger,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'checksum' AND NOT a.attisdropped)
           AS has_checksum,
       u.unique_version IS NOT NULL AS unique_version
FROM (SELECT $1::text AS name) s
LEFT JOIN pg_namespace n ON n.nspname = s.name
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = '{LEDGER_TABLE}'
                    AND c.relkind IN ('r', 'p')
{_UNIQUE_VERSION.format(gate="")}"""

# The checksum column is looked up per ledger (a join on pg_attribute's (attrelid,
# attname) index): an EXISTS subquery here became one hashed scan of all of
# pg_attribute, which at 10,000 tenants holds over a million rows (~0.2 s). No
# `NOT attisdropped` test: a dropped column is renamed "........pg.dropped.N........",
# so the name alone decides, and the join stays an index-only scan (0.11 -> 0.06 s).
_FLEET_CATALOG = f"""
SELECT t.slug, t.schema_name,
       n.oid IS NOT NULL AS exists,
       c.oid IS NOT NULL AS has_ledger,
       a.attrelid IS NOT NULL AS has_checksum,
       u.unique_version IS NOT NULL{{tracked_is_unique}} AS unique_version,
       {{digest_columns}}
FROM ({{registry}}) t
LEFT JOIN pg_namespace n ON n.nspname = t.schema_name
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = '{LEDGER_TABLE}'
                    AND c.relkind IN ('r', 'p')
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'checksum'
{{digest_joins}}{{unique_version}}ORDER BY t.slug
"""

# (fingerprint, rows) -> applied: the ledger states a digest can stand for (digest.known_ledgers)
KnownLedgers = Mapping[tuple[int, int], Mapping[str, str]]
# Makes a read, maybe more than once: retry(read) -> what read() gives
Retry = Callable[[Callable[[], Awaitable[list[SchemaState]]]], Awaitable[list[SchemaState]]]


@dataclass(frozen=True, slots=True)
class Tenant:
    slug: str
    schema: str
    name: str | None = None


def _shape(row: Mapping[str, bool]) -> LedgerShape:
    if not row["has_ledger"]:
        return LedgerShape.MISSING
    current = row["has_checksum"] and row["unique_version"]
    return LedgerShape.CURRENT if current else LedgerShape.GUIDE


# The column names of public.tenants (registries adopted from older tools vary), NULL when
# there is no registry yet: a select-list expression, asked with whatever else a caller needs.
REGISTRY_COLUMNS = f"""(SELECT array_agg(attname::text) FROM pg_attribute
        WHERE attrelid = to_regclass('{REGISTRY_TABLE}') AND attnum > 0 AND NOT attisdropped)"""


async def registry_columns(conn: asyncpg.Connection) -> set[str] | None:
    """The column names of public.tenants; None when there is no registry."""
    columns = await conn.fetchval(f"SELECT {REGISTRY_COLUMNS}")
    return None if columns is None else set(columns)


# What the fleet's catalog query depends on, in one round trip: the registry's columns
# (NULL when there is no registry) and whether the digest may be read.
_FLEET_SHAPE = f"""
SELECT {REGISTRY_COLUMNS} AS registry_columns,
       {digest.READABLE} AS digest_readable
"""


def _registry_select(columns: set[str]) -> str:
    """A SELECT of (slug, schema_name, name) over public.tenants, adopting older registries
    that have no schema_name or name column."""
    schema_expr = "schema_name" if "schema_name" in columns else f"'{SCHEMA_PREFIX}' || slug"
    name_expr = "name" if "name" in columns else "NULL"
    return (
        f"SELECT slug::text AS slug, {schema_expr}::text AS schema_name, {name_expr}::text AS name"
        " FROM public.tenants WHERE $1::text[] IS NULL OR slug = ANY($1::text[])"
    )


async def _fleet_shape(conn: Queryable) -> tuple[set[str], bool]:
    """(the registry's columns, whether the digest is readable); RegistryMissingError
    before `archify public` created the registry."""
    row = await conn.fetchrow(_FLEET_SHAPE)
    if row["registry_columns"] is None:
        raise RegistryMissingError()
    return set(row["registry_columns"]), row["digest_readable"]


async def read_tenant_states(
    conn: Queryable, slugs: Sequence[str] | None = None, known: KnownLedgers | None = None
) -> list[SchemaState]:
    """Every registered tenant (or those in `slugs`), with its schema and ledger shape.

    One query. Where a tracked ledger's digest is in `known`, its applied versions
    come with it; the others are read later, batch by batch, by `with_applied`.
    Rows whose slug or schema name cannot be trusted carry a `problem` and are
    never migrated. RegistryMissingError before the registry exists.
    """
    columns, with_digest = await _fleet_shape(conn)
    query = _FLEET_CATALOG.format(
        registry=_registry_select(columns),
        digest_columns=digest.catalog_columns(with_digest),
        digest_joins=digest.catalog_joins(with_digest),
        unique_version=_UNIQUE_VERSION.format(
            gate="d.fingerprint IS NULL AND " if with_digest else ""),
        tracked_is_unique=" OR d.fingerprint IS NOT NULL" if with_digest else "",
    )
    rows = await conn.fetch(query, list(slugs) if slugs is not None else None)
    known = known or {}
    states = []
    for row in rows:
        tracked = row["fingerprint"] is not None
        applied = known.get((row["fingerprint"], row["digest_rows"])) if tracked else None
        states.append(SchemaState(
            schema=row["schema_name"],
            kind=Scope.TENANT,
            slug=row["slug"],
            exists=row["exists"],
            ledger=_shape(row),
            problem=registry_problem(row["slug"], row["schema_name"]),
            tracked=tracked,
            applied={} if applied is None else applied,
            from_digest=applied is not None,
        ))
    return states


async def read_schema_state(
    conn: asyncpg.Connection, schema: str, kind: Scope, slug: str | None = None
) -> SchemaState:
    """One schema's full state (catalog and ledger) in two queries."""
    row = await conn.fetchrow(_SCHEMA_CATALOG, schema)
    state = SchemaState(
        schema=schema, kind=kind, slug=slug, exists=row["exists"],
        ledger=_shape(row),
    )
    [state] = await with_applied(conn, [state])
    return state


async def read_public_state(conn: asyncpg.Connection) -> SchemaState:
    return await read_schema_state(conn, PUBLIC_SCHEMA, Scope.PUBLIC)


async def with_applied(
    conn: Queryable, states: Sequence[SchemaState]
) -> list[SchemaState]:
    """The same states with `applied` read from their ledgers, in one statement.

    A tenant dropped since the catalog was read (its ledger gone: 42P01) is marked
    as missing, and the others are read again, instead of the whole read failing.
    """
    states = list(states)
    readable = {
        i: s.schema for i, s in enumerate(states)
        if s.ledger is not LedgerShape.MISSING and s.problem is None and not s.from_digest
    }
    rows, gone = await read_ledgers(
        conn, readable, lambda keys: _ledgers_query([(i, states[i]) for i in keys]))
    for i, exists in gone.items():
        states[i] = replace(states[i], exists=exists, ledger=LedgerShape.MISSING)
    applied: dict[int, dict[str, str | None]] = {i: {} for i in readable if i not in gone}
    # Every tenant holds the same few versions and checksums: share one string
    # object per value instead of one per row (~2 MB less at 10,000 tenants).
    for row in rows:
        checksum = row[2]
        applied[row[0]][sys.intern(row[1])] = (
            sys.intern(checksum) if checksum is not None else None
        )
    return [
        replace(s, applied=applied[i]) if i in applied else s for i, s in enumerate(states)
    ]


def _ledgers_query(readable: Sequence[tuple[int, SchemaState]]) -> str:
    return "\nUNION ALL\n".join(
        f"SELECT {i}::int AS i, version::text AS version, "
        f"{'checksum::text' if s.ledger is LedgerShape.CURRENT else 'NULL::text'} AS checksum "
        f"FROM {quote_ident(s.schema)}.{LEDGER_TABLE}"
        for i, s in readable
    )


def _waves(
    states: Sequence[SchemaState], batch: int, readers: int
) -> list[list[Sequence[SchemaState]]]:
    """The ledger reads to make, as waves of up to `readers` chunks of `batch` schemas
    read at once. The first wave is one short chunk, so that work can start on the
    first schemas while the rest of the fleet is still being read."""
    first = min(batch, FIRST_BATCH)
    chunks = [states[start:start + batch] for start in range(first, len(states), batch)]
    waves = [[states[:first]]] if states else []
    return waves + [chunks[i:i + readers] for i in range(0, len(chunks), readers)]


@asynccontextmanager
async def tenant_state_batches(
    conn: Queryable, states: Sequence[SchemaState], batch: int | None = None, *,
    retry: Retry | None = None,
) -> AsyncIterator[AsyncIterator[list[SchemaState]]]:
    """Tenant states with their ledgers read, `batch` schemas at a time, in order.

    The ledgers are read ahead in a task of their own while the caller works on
    the batches already delivered; at most a few batches wait in memory. Given a
    pool, up to LEDGER_READERS batches are read at once on separate connections:
    opening thousands of small tables is the server's work, and spreading it
    over backends uses every core of the server. `retry(read)` makes each read (e.g.
    again once a lost server answers, server_watch.ServerWatch.retrying). Use as::

        async with tenant_state_batches(pool, states) as batches:
            async for batch in batches: ...
    """
    batch = batch or LEDGER_BATCH
    readers = LEDGER_READERS if isinstance(conn, asyncpg.Pool) else 1
    send, receive = anyio.create_memory_object_stream[list[SchemaState]](readers)

    async def read_ahead() -> None:
        async with send:
            for todo in _waves(states, batch, readers):
                done: list[list[SchemaState]] = [[] for _ in todo]

                async def read(i: int, todo: list[Sequence[SchemaState]] = todo,
                               done: list[list[SchemaState]] = done) -> None:
                    def once() -> Awaitable[list[SchemaState]]:
                        return with_applied(conn, todo[i])

                    done[i] = await (retry(once) if retry is not None else once())

                async with anyio.create_task_group() as readers_tg:
                    for i in range(len(todo)):
                        readers_tg.start_soon(read, i)
                for chunk in done:
                    await send.send(chunk)

    try:
        # receive closes last, after the reader task is done or cancelled
        async with receive, anyio.create_task_group() as tg:
            tg.start_soon(read_ahead)
            yield receive
            tg.cancel_scope.cancel()  # the caller stopped early: stop reading
    except BaseExceptionGroup as group:
        raise sole_error(group) from None


async def list_tenants(conn: Queryable) -> list[Tenant]:
    """Every registered tenant, by slug; empty before the registry exists."""
    try:
        columns, _ = await _fleet_shape(conn)
    except RegistryMissingError:
        return []
    rows = await conn.fetch(_registry_select(columns) + " ORDER BY slug", None)
    return [Tenant(row["slug"], row["schema_name"], row["name"]) for row in rows]
