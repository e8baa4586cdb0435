"""Reading the structure of tenant schemas from the catalog, for the whole fleet at once.

A schema's structure is a set of items (kind, name, definition): its tables (with their
columns' order), columns (type, nullability, default, identity), indexes, constraints,
sequences, views, functions and procedures (result, language, volatility, body),
triggers and types (enums with their labels in order, domains, composite types), never
its data. Definitions have the schema's own name taken out, so two tenants built by the
same migrations have the same items.

Two reads, each one query (or one per kind of item) for every schema given
(`nspname = ANY($1)`):
- `read_fingerprints` digests each schema's raw catalog rows on the server: numbers
  (type, operator class and column numbers) where the definitions would be text the
  server has to write out, which is what costs (pg_get_indexdef alone is ~14 µs an
  index). Only what names a schema's own objects is turned into text or names (a
  sequence in a default, a local type, a foreign key's table), so alike schemas get
  alike fingerprints. 10,000 schemas cost 10,000 short rows per kind, and the kinds are
  read side by side on a pool.
- `read_structures` writes the items out as text, only for the few schemas that stand
  for a fingerprint. The text decides (structural_drift.compare): a fingerprint can tell
  apart what reads the same (a column's number after a column was dropped, an
  expression written at another offset), never the other way round, since every text
  item is a function of the raw rows its fingerprint digests.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence

import anyio
import asyncpg

from .digest import ROW_TRIGGER, TRUNCATE_TRIGGER
from .errors import first_error
from .execution import ExecutionOptions
from .ledger_reads import Queryable
from .migration import MigrationSet, Scope
from .sql import creation_chunks

# Removes the schema's own qualification from a definition: `tenant_acme.users` -> `users`.
_LOCAL = "replace({0}, quote_ident(n.nspname) || '.', '')"

# A domain: "domain over integer not null default 0 CHECK ((VALUE > 0))".
_DOMAIN = """'domain over ' || format_type(t.typbasetype, t.typtypmod)
       || CASE WHEN t.typnotnull THEN ' not null' ELSE '' END
       || COALESCE(' default ' || t.typdefault, '')
       || COALESCE((SELECT string_agg(' ' || pg_get_constraintdef(k.oid), ''
                                      ORDER BY pg_get_constraintdef(k.oid))
                      FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c'), '')"""
# A composite type: "composite (amount numeric(12,2), currency text)".
_COMPOSITE = """'composite (' || COALESCE((SELECT string_agg(
           quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', '
           ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '') || ')'"""

# A column's default or generation expression, as text. A default names no column, so
# it is written out without its table: with the table, the server opens the table first
# (a relation cache entry per tenant table: 2.4 s instead of 0.4 s for 110,000 defaults)
_DEFAULT = _LOCAL.format("pg_get_expr(d.adbin, 0)")
_GENERATED = _LOCAL.format("pg_get_expr(d.adbin, d.adrelid)")

# The schemas' relations, read once: pg_class has no index by schema, so each kind
# joining it would scan it whole (~30 ms at 10,000 tenants, for one schema as for all);
# from these rows each kind's catalog is reached through its index
_RELS = """WITH _rels AS MATERIALIZED (
  SELECT c.oid, c.relname, c.relkind, c.relnamespace FROM pg_class c
   WHERE c.relnamespace IN (SELECT n.oid FROM pg_namespace n WHERE n.nspname = ANY($1)))
"""

# The items, one query per kind, each row (schema, kind, name, definition). Indexes that
# back a constraint are read as the constraint; the ledger digest's triggers are
# archify's, not the tenant's.
_RELATIONS = f"""
SELECT n.nspname AS schema,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table'
                      ELSE 'table' END AS kind,
       c.relname::text AS name,
       CASE WHEN c.relkind IN ('v', 'm') THEN {_LOCAL.format("pg_get_viewdef(c.oid)")}
            WHEN c.relkind = 'S' THEN (SELECT format('%s start %s increment %s',
                 format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement)
                 FROM pg_sequence s WHERE s.seqrelid = c.oid)
            -- a table: its columns in order (a column dropped and added back moves)
            ELSE 'columns (' || COALESCE((SELECT string_agg(quote_ident(a.attname), ', '
                                                            ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                  AND NOT a.attisdropped), '') || ')' END AS definition
  FROM _rels c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"""
_COLUMNS = f"""
SELECT n.nspname, 'column', c.relname || '.' || a.attname,
       {_LOCAL.format("format_type(a.atttypid, a.atttypmod)")}
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || CASE a.attidentity WHEN 'a' THEN ' generated always as identity'
                             WHEN 'd' THEN ' generated by default as identity' ELSE '' END
       || COALESCE(CASE WHEN a.attgenerated = '' THEN ' default ' || {_DEFAULT}
                        ELSE ' generated always as (' || {_GENERATED} || ')'
                             || CASE a.attgenerated WHEN 's' THEN ' stored' ELSE '' END
                   END, '')
  FROM _rels c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'f')"""
_INDEXES = f"""
SELECT n.nspname, 'index', c.relname::text,
       {_LOCAL.format("pg_get_indexdef(i.indexrelid)")}
  FROM _rels c JOIN pg_index i ON i.indexrelid = c.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1)
   AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid
                                                 AND k.contype IN ('p', 'u', 'x'))"""
_CONSTRAINTS = f"""
SELECT n.nspname, 'constraint', c.relname || '.' || k.conname,
       {_LOCAL.format("pg_get_constraintdef(k.oid)")}
  FROM _rels c JOIN pg_constraint k ON k.conrelid = c.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND k.contype <> 'n'  -- NOT NULL: read with the column"""
_ROUTINES = f"""
SELECT n.nspname, CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
       p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       -- the parts structural_drift._function_change reads; a procedure returns nothing
       COALESCE('returns ' || {_LOCAL.format("pg_get_function_result(p.oid)")} || '; ', '')
       || 'language ' || l.lanname
       || '; ' || CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable'
                                     ELSE 'volatile' END
       || '; body ' || md5(p.prosrc)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_language l ON l.oid = p.prolang
 WHERE n.nspname = ANY($1)"""
_TYPES = f"""
SELECT n.nspname, 'type', t.typname::text,
       CASE t.typtype
       WHEN 'e' THEN 'enum (' || COALESCE((SELECT string_agg(quote_literal(e.enumlabel), ', '
                                                              ORDER BY e.enumsortorder)
                                             FROM pg_enum e WHERE e.enumtypid = t.oid), '')
                    || ')'
       WHEN 'd' THEN {_LOCAL.format(_DOMAIN)}
       ELSE {_LOCAL.format(_COMPOSITE)} END
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = ANY($1)
   AND (t.typtype IN ('e', 'd')  -- a table's row type is the table: standalone ones only
        OR t.typtype = 'c' AND (SELECT r.relkind = 'c' FROM pg_class r WHERE r.oid = t.typrelid))"""
_TRIGGERS = f"""
SELECT n.nspname, 'trigger', c.relname || '.' || t.tgname,
       {_LOCAL.format("pg_get_triggerdef(t.oid)")}
  FROM _rels c JOIN pg_trigger t ON t.tgrelid = c.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND NOT t.tgisinternal
   AND t.tgname NOT IN ('{ROW_TRIGGER}', '{TRUNCATE_TRIGGER}')"""
ITEMS = _RELS + "\nUNION ALL".join(
    (_RELATIONS, _COLUMNS, _INDEXES, _CONSTRAINTS, _ROUTINES, _TYPES, _TRIGGERS))

# The same kinds as raw rows (schema, item), for fingerprints: each holds at least what
# its items' text is written from (see the module's docstring).
_RAW_RELATIONS = f"""
SELECT n.nspname AS schema, concat_ws(' ', c.relkind, c.relname,
       CASE WHEN c.relkind IN ('v', 'm') THEN {_LOCAL.format("pg_get_viewdef(c.oid)")} END,
       (SELECT concat_ws(' ', s.seqtypid, s.seqstart, s.seqincrement)
          FROM pg_sequence s WHERE c.relkind = 'S' AND s.seqrelid = c.oid)) AS item
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"""
# a column's number stands for its place; a type of the schema's own by its name
_RAW_COLUMNS = f"""
SELECT n.nspname AS schema, concat_ws(' ', c.relname, a.attname, a.attnum,
       CASE WHEN t.typnamespace = c.relnamespace THEN t.typname::text
            ELSE a.atttypid::text END,
       a.atttypmod, a.attnotnull, a.attidentity, a.attgenerated,
       CASE WHEN a.attgenerated = '' THEN {_DEFAULT} ELSE {_GENERATED} END) AS item
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'f')"""
# every index, constraints' too; expressions as text (they are rare)
_RAW_INDEXES = f"""
SELECT n.nspname AS schema, concat_ws(' ', c.relname, t.relname, c.relam, i.indisunique,
       i.indnullsnotdistinct, i.indnkeyatts, i.indkey, i.indclass, i.indcollation,
       i.indoption, c.reloptions,
       {_LOCAL.format("pg_get_expr(i.indexprs, i.indrelid)")},
       {_LOCAL.format("pg_get_expr(i.indpred, i.indrelid)")}) AS item
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1)"""
# a primary key or unique constraint by its columns (its index is read above); a
# validated foreign key by its numbers and the table it references (written out, the
# server looks up both tables' names and columns: 0.4 s more for 20,000 keys in a new
# connection; a key not validated may be NOT ENFORCED, which only its text says); the
# others, which hold expressions, as text
_RAW_CONSTRAINTS = f"""
SELECT n.nspname AS schema, concat_ws(' ', c.relname, k.conname, k.contype, k.conkey,
       k.condeferrable, k.condeferred,
       CASE WHEN k.contype IN ('p', 'u') THEN NULL
            WHEN k.contype = 'f' AND k.convalidated THEN concat_ws(' ', k.confkey,
                 k.confmatchtype, k.confupdtype, k.confdeltype, k.confdelsetcols,
                 (SELECT CASE WHEN f.relnamespace = c.relnamespace THEN f.relname::text
                              ELSE f.oid::text END FROM pg_class f WHERE f.oid = k.confrelid))
            ELSE {_LOCAL.format("pg_get_constraintdef(k.oid)")} END) AS item
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND k.contype <> 'n'"""
_AS_TEXT = ("SELECT schema, concat_ws(' ', kind, name, definition) AS item"
            " FROM ({0}) items (schema, kind, name, definition)")
_OTHERS = _AS_TEXT.format(_RELS + "\nUNION ALL".join((_ROUTINES, _TYPES, _TRIGGERS)))


def _fingerprint_part(raw: str) -> str:
    """Per schema, the count and the sum of the items' 64-bit hashes: a digest of the
    set, in no order, so the server sorts nothing."""
    return (f"SELECT schema, count(*) AS n, sum(hashtextextended(item, 0)) AS h"
            f" FROM ({raw}) raw GROUP BY schema")


# Two lanes, each a connection running its parts one after another: at 10,000 tenants
# the columns take as long as all the rest (1.0 s, against 0.4 + 0.3 + 0.2 + 0.15 s, and
# the 0.04 s of a structure read after them). Two lanes keep two server cores busy;
# five queries at once were 20 % slower, each contending with the others for the same
# cores and buffers.
FINGERPRINT_LANES = (
    (_fingerprint_part(_RAW_COLUMNS),),
    tuple(map(_fingerprint_part, (_RAW_INDEXES, _RAW_CONSTRAINTS, _RAW_RELATIONS, _OTHERS))),
)
_FINGERPRINT_SETTINGS = "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL work_mem = '64MB'"

# (kind, name) -> definition: one schema's structure
Structure = Mapping[tuple[str, str], str]


async def read_fingerprints(
    pool: asyncpg.Pool, schemas: Sequence[str], structures_of: Sequence[str] = ()
) -> tuple[dict[str, str], dict[str, Structure]]:
    """schema -> fingerprint, for every schema given, and the structures of
    `structures_of` besides, read at the end of the last lane."""
    found: dict[str, dict[str, str]] = {}  # query -> schema -> "count:sum"
    structures: dict[str, Structure] = {}

    async def run(lane: Sequence[str], then_structures: bool) -> None:
        async with pool.acquire() as conn:
            async with conn.transaction(readonly=True):
                # the lanes already keep the server's cores busy: no parallel workers,
                # which only add their start and their merge; each part's joins in memory
                await conn.execute(_FINGERPRINT_SETTINGS)
                for query in lane:
                    found[query] = {row["schema"]: f"{row['n']}:{row['h']}"
                                    for row in await conn.fetch(query, list(schemas))}
            if then_structures and structures_of:
                structures.update(await read_structures(conn, structures_of))

    try:
        async with anyio.create_task_group() as tg:
            for i, lane in enumerate(FINGERPRINT_LANES):
                tg.start_soon(run, lane, i == len(FINGERPRINT_LANES) - 1)
    except BaseExceptionGroup as group:
        # the lanes fail together when the server does: the caller gets its error
        raise first_error(group) from None
    queries = [query for lane in FINGERPRINT_LANES for query in lane]
    fingerprints = {
        schema: hashlib.md5(" ".join(found[q].get(schema, "0:0") for q in queries).encode(),
                            usedforsecurity=False).hexdigest()
        for schema in schemas}
    return fingerprints, structures


async def read_structures(conn: Queryable, schemas: Sequence[str]) -> dict[str, Structure]:
    """schema -> its structure, for every schema given (one query)."""
    structures: dict[str, dict[tuple[str, str], str]] = {s: {} for s in schemas}
    for row in await conn.fetch(ITEMS, list(schemas)):
        structures[row["schema"]][(row["kind"], row["name"])] = row["definition"] or ""
    return structures


class _RolledBack(Exception):
    """Ends the scratch transaction: nothing it built may stay."""


async def read_migrations_structure(
    conn: asyncpg.Connection, migrations: MigrationSet, options: ExecutionOptions
) -> Structure:
    """The structure of a schema built by every tenant migration, as a new tenant's is:
    in a scratch schema, in a transaction that is rolled back."""
    scratch = f"archify_drift_{secrets.token_hex(6)}"
    chunks = creation_chunks(scratch, migrations.for_kind(Scope.TENANT), **options.timeouts)
    result: Structure | None = None
    try:
        async with conn.transaction():
            for chunk in chunks:
                if chunk.python is not None:
                    assert chunk.python.upgrade_py is not None
                    await chunk.python.upgrade_py(conn)
                else:
                    await conn.execute(chunk.sql)
            # read as the fleet is read, on the session's search_path rather than the
            # scratch schema's alone: else a type from public reads `public.mood` here
            await conn.execute("SET LOCAL search_path TO DEFAULT")
            result = (await read_structures(conn, [scratch]))[scratch]
            raise _RolledBack
    except _RolledBack:
        pass
    assert result is not None
    return result
