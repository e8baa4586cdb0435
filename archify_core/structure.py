"""Reading the structure of tenant schemas from the catalog, for the whole fleet at once.

A schema's structure is a set of items (kind, name, definition): its tables (with their
columns' order), columns (type, nullability, default), indexes, constraints, sequences,
views, functions and procedures (result, language, volatility, body), triggers and
types (enums with their labels in order, domains, composite types), never its data.
Definitions have the schema's own name taken out, so two tenants built by the same
migrations have the same items.

Two reads, each one query for every schema given (`nspname = ANY($1)`):
`read_fingerprints` lets the server digest each schema's items, so 10,000 schemas
cost 10,000 short rows; `read_structures` fetches the items themselves, only for the
few schemas that stand for a group.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import asyncpg

from .digest import ROW_TRIGGER, TRUNCATE_TRIGGER
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

# One row per item: (schema, kind, name, definition). Indexes that back a constraint are
# read as the constraint; the ledger digest's triggers are archify's, not the tenant's.
ITEMS = f"""
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
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT n.nspname, 'column', c.relname || '.' || a.attname,
       {_LOCAL.format("format_type(a.atttypid, a.atttypmod)")}
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || COALESCE(' default ' || {_LOCAL.format("pg_get_expr(d.adbin, d.adrelid)")}, '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT n.nspname, 'index', c.relname::text,
       {_LOCAL.format("pg_get_indexdef(i.indexrelid)")}
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1)
   AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid
                                                 AND k.contype IN ('p', 'u', 'x'))
UNION ALL
SELECT n.nspname, 'constraint', c.relname || '.' || k.conname,
       {_LOCAL.format("pg_get_constraintdef(k.oid)")}
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND k.contype <> 'n'  -- NOT NULL: read with the column
UNION ALL
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
 WHERE n.nspname = ANY($1)
UNION ALL
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
        OR t.typtype = 'c' AND (SELECT r.relkind = 'c' FROM pg_class r WHERE r.oid = t.typrelid))
UNION ALL
SELECT n.nspname, 'trigger', c.relname || '.' || t.tgname,
       {_LOCAL.format("pg_get_triggerdef(t.oid)")}
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND NOT t.tgisinternal
   AND t.tgname NOT IN ('{ROW_TRIGGER}', '{TRUNCATE_TRIGGER}')
"""

# Per schema, a digest of its items in a fixed order: equal digests, equal structures.
# Schemas with no items at all are absent (read_fingerprints fills them in).
FINGERPRINTS = f"""
SELECT schema, md5(string_agg(kind || ' ' || name || ' ' || COALESCE(definition, ''), E'\\n'
                              ORDER BY kind, name, definition)) AS fingerprint
  FROM ({ITEMS}) items GROUP BY schema
"""

EMPTY_FINGERPRINT = "d41d8cd98f00b204e9800998ecf8427e"  # md5 of nothing: a schema with no items


# (kind, name) -> definition: one schema's structure
Structure = Mapping[tuple[str, str], str]


async def read_fingerprints(conn: Queryable, schemas: Sequence[str]) -> dict[str, str]:
    """schema -> fingerprint, for every schema given (one query)."""
    rows = await conn.fetch(FINGERPRINTS, list(schemas))
    found = {row["schema"]: row["fingerprint"] for row in rows}
    return {schema: found.get(schema, EMPTY_FINGERPRINT) for schema in schemas}


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
) -> tuple[str, Structure]:
    """(fingerprint, structure) of a schema built by every tenant migration, as a new
    tenant's is: in a scratch schema, in a transaction that is rolled back."""
    scratch = f"archify_drift_{secrets.token_hex(6)}"
    chunks = creation_chunks(scratch, migrations.for_kind(Scope.TENANT), **options.timeouts)
    result: tuple[str, Structure] | None = None
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
            fingerprint = (await read_fingerprints(conn, [scratch]))[scratch]
            result = fingerprint, (await read_structures(conn, [scratch]))[scratch]
            raise _RolledBack
    except _RolledBack:
        pass
    assert result is not None
    return result
