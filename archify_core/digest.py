"""The ledger digest: what every tenant ledger holds, in one table of `public`.

Reading the fleet's state from the ledgers themselves opens two relations per
tenant (the ledger and its index), which costs the server ~150 µs of CPU per
schema however the query is written (docs/performance.md). The digest answers
the same question from one table: a row per tenant ledger with its row count
and its fingerprint, the XOR of a 64-bit hash of every (version, checksum) row.
A ledger holding exactly the first k tenant migrations, with the files'
checksums, has a fingerprint archify can compute from the files alone, so
planning needs no ledger read for it (`known_ledgers`).

The per-schema ledger stays the truth; the digest follows it in the same
transaction whoever writes it:
- archify's own ledger writes update the digest in the same statement
  (`record_sql`, `unrecord_sql`), in transactions marked by a transaction-local
  setting (`writer_mark`) so that the trigger below skips them;
- a trigger on each tracked ledger (`track_ledger_sql`) applies every other
  write (the guide's manual rollback, psql, older tools): rows inserted,
  updated or deleted, and TRUNCATE. Its function is SECURITY DEFINER, so a
  writer needs no privilege on the digest table;
- a digest is trusted only while both triggers exist and are enabled and its
  row names the ledger's own table (by OID); otherwise that ledger is read.

Hashing is commutative, so concurrent writers to one ledger (serialized on the
digest row) leave the right fingerprint in any order.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import asyncpg

from .ledger_reads import read_ledgers
from .migration import Migration
from .quoting import LEDGER_TABLE, REGISTRY_TABLE, ledger_name, quote_literal

DIGEST_TABLE = "public.archify_ledger_digest"
HASH_FUNCTION = "public.archify_ledger_row_hash"
SYNC_FUNCTION = "public.archify_ledger_digest_sync"
ROW_TRIGGER = "archify_ledger_digest"
TRUNCATE_TRIGGER = "archify_ledger_digest_truncate"
# Set (transaction-local) by archify's own ledger writes, which update the digest
# themselves: the row trigger's WHEN skips them.
WRITER_SETTING = "archify.ledger_writer"
# Marks the functions' version (a comment on SYNC_FUNCTION): a database set up by an
# archify whose functions differ is set up again by the next run that writes. (2: the
# trigger looks its row up by key. TG_TABLE_SCHEMA is a `name`, whose collation is "C":
# compared with the key as it was, it scanned the whole table, ~0.4 ms per write at
# 10,000 tenants.)
SETUP_MARK = "archify ledger digest 2"


def row_hash_sql(version: str, checksum: str) -> str:
    """A call of HASH_FUNCTION on two columns. The arguments are cast to text, the exact
    types of its signature: on the ledger's varchar columns as they are, a look-alike
    `(varchar, varchar)` function that another role created in `public` would be the
    better match, and would run instead, with the caller's privileges."""
    return f"{HASH_FUNCTION}({version}::text, {checksum}::text)"


SETUP_SQL = f"""
SELECT pg_advisory_xact_lock(hashtext('archify_ledger_digest'));
CREATE TABLE IF NOT EXISTS {DIGEST_TABLE} (
    schema_name text PRIMARY KEY,
    ledger oid NOT NULL,
    fingerprint bigint NOT NULL,
    applied integer NOT NULL
) WITH (fillfactor = 50);
CREATE OR REPLACE FUNCTION {HASH_FUNCTION}(version text, checksum text)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $archify$
    SELECT ('x' || left(md5(version || chr(31) || coalesce(checksum, '')), 16))::bit(64)::bigint
$archify$;
CREATE OR REPLACE FUNCTION {SYNC_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $archify$
DECLARE
    change bigint := 0;
    delta integer := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE {DIGEST_TABLE} SET fingerprint = 0, applied = 0
        WHERE schema_name = TG_TABLE_SCHEMA::text COLLATE "default" AND ledger = TG_RELID;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        change := change # {row_hash_sql("OLD.version", "OLD.checksum")};
        delta := delta - 1;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        change := change # {row_hash_sql("NEW.version", "NEW.checksum")};
        delta := delta + 1;
    END IF;
    UPDATE {DIGEST_TABLE} SET fingerprint = fingerprint # change, applied = applied + delta
    WHERE schema_name = TG_TABLE_SCHEMA::text COLLATE "default" AND ledger = TG_RELID;
    RETURN NULL;
END
$archify$;
COMMENT ON FUNCTION {SYNC_FUNCTION}() IS '{SETUP_MARK}';
"""


def _trusted_owner(owner: str) -> str:
    """Whether the role `owner` (an OID expression) is trusted as far as the registry is:
    this role, a superuser, the database's owner or the registry's (public.tenants)."""
    return (
        "coalesce((SELECT t.rolname = current_user OR t.rolsuper"
        " OR t.oid = (SELECT datdba FROM pg_database WHERE datname = current_database())"
        f" OR t.oid = (SELECT relowner FROM pg_class WHERE oid = to_regclass('{REGISTRY_TABLE}'))"
        f" FROM pg_roles t WHERE t.oid = {owner}), false)"
    )


# Whether the digest's table and functions belong to a trusted role (_trusted_owner).
# Another role's table would run that role's code (its triggers, rules, index
# expressions) with our privileges when we write it, and its rows (which decide what is
# pending) would be trusted; where `public` is writable by everyone (before PostgreSQL
# 15) any role could create it first. Not trusted, the digest is neither kept nor read:
# every ledger is.
TRUSTED = " AND ".join((
    _trusted_owner(f"(SELECT relowner FROM pg_class WHERE oid = to_regclass('{DIGEST_TABLE}'))"),
    *(_trusted_owner(f"(SELECT proowner FROM pg_proc WHERE oid = to_regprocedure('{f}'))")
      for f in (f"{HASH_FUNCTION}(text, text)", f"{SYNC_FUNCTION}()")),
))

# Whether the digest table exists and this role may keep it (a select-list expression).
WRITABLE = " AND ".join([
    *(f"coalesce(has_table_privilege(to_regclass('{DIGEST_TABLE}'), '{privilege}'), false)"
      for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")),
    TRUSTED,
])

# CREATE OR REPLACE TRIGGER and bit_xor: PostgreSQL 14. Older servers run without a
# digest, reading every ledger as before.
MIN_SERVER_VERSION = 140000

# Whether the digest is set up (this archify version's functions), this role may keep it,
# and who owns a table archify must not trust: one row, which prepare() reads.
READY = f"""
SELECT current_setting('server_version_num')::int AS server_version,
       to_regclass('{DIGEST_TABLE}') IS NOT NULL
       AND to_regprocedure('{SYNC_FUNCTION}()') IS NOT NULL
       AND to_regprocedure('{HASH_FUNCTION}(text, text)') IS NOT NULL
       AND obj_description(to_regprocedure('{SYNC_FUNCTION}()'), 'pg_proc') = '{SETUP_MARK}'
           AS ready,
       {WRITABLE} AS writable,
       (SELECT r.rolname::text FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
        WHERE c.oid = to_regclass('{DIGEST_TABLE}') AND NOT {_trusted_owner("r.oid")})
           AS foreign_owner
"""


async def prepare(conn: asyncpg.Connection, warn: Callable[[str], None] | None = None, *,
                  state: Mapping[str, Any] | None = None) -> bool:
    """Create the digest table and its functions if they are missing and this role may;
    return whether this role keeps digests itself (may write the table, and trusts its
    owner: TRUSTED). When it may not, archify writes ledgers as before: the trigger
    keeps tracked ledgers' digests, and untracked ledgers stay untracked (read
    directly). Before PostgreSQL 14 there is no digest at all. `warn` is told when a
    digest table of another role is ignored. `state`: the READY row, when the caller
    asked for it with something else in the same round trip."""
    if state is None:
        state = await conn.fetchrow(READY)
    if state["server_version"] < MIN_SERVER_VERSION:
        return False
    if state["foreign_owner"] is not None and warn is not None:
        warn(f"{DIGEST_TABLE} belongs to role {state['foreign_owner']}: neither this role, a"
             " superuser, the database's owner nor the registry's. Archify neither writes nor"
             " trusts it, and reads every ledger. Drop it (the next run that may creates it"
             " again), or give it to a trusted role.")
    if not state["ready"]:
        try:
            async with conn.transaction():
                await conn.execute(SETUP_SQL)
        except asyncpg.InsufficientPrivilegeError:
            return False
        state = await conn.fetchrow(READY)
    return bool(state["writable"])


# Whether the digest table exists, this role may read it and trusts its owner (if not,
# every ledger is read, as before the digest): a select-list expression, asked with the
# fleet's catalog.
READABLE = (f"coalesce(has_table_privilege(to_regclass('{DIGEST_TABLE}'), 'SELECT'), false)"
            f" AND {TRUSTED}")


# Digest rows that name their schema's ledger: the ones a fleet read would trust (given
# the triggers), with the ledger's own rows summed by the server's hash function.
_DIGESTS_AND_LEDGERS = f"""
SELECT d.schema_name, d.fingerprint, d.applied
FROM {DIGEST_TABLE} d
JOIN pg_class c ON c.oid = d.ledger AND c.relname = '{LEDGER_TABLE}'
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = d.schema_name
ORDER BY d.schema_name
"""
CHECK_BATCH = 250  # ledgers per statement, as in ledger.LEDGER_BATCH: the lock table


async def tracked(conn: asyncpg.Connection) -> set[str]:
    """The schemas with a digest row that names their ledger (benchmarks and tests check
    that a run left one for every tenant)."""
    return {row["schema_name"] for row in await conn.fetch(_DIGESTS_AND_LEDGERS)}


async def stale(conn: asyncpg.Connection) -> list[str]:
    """The schemas whose digest row disagrees with what their ledger holds: written with
    the triggers skipped (session_replication_role = replica, a disabled trigger) or the
    row edited by hand. Reads every such ledger; `archify validate` reports them. A
    tenant dropped while it reads is left out (nothing of it is left to disagree)."""
    if not await conn.fetchval(f"SELECT {READABLE}"):
        return []
    digests = await conn.fetch(_DIGESTS_AND_LEDGERS)
    found = []
    for start in range(0, len(digests), CHECK_BATCH):
        part = dict(enumerate(digests[start:start + CHECK_BATCH]))
        rows, _ = await read_ledgers(
            conn, {i: d["schema_name"] for i, d in part.items()},
            lambda keys, part=part: "\nUNION ALL\n".join(
                f"SELECT {i} AS i, coalesce(bit_xor({row_hash_sql('version', 'checksum')}), 0),"
                f" count(*)::int FROM {ledger_name(part[i]['schema_name'])}" for i in keys))
        found += [part[i]["schema_name"] for i, fingerprint, applied in rows
                  if (fingerprint, applied) != (part[i]["fingerprint"], part[i]["applied"])]
    return sorted(found)


# -- SQL text (pure) ---------------------------------------------------------------------


def track_ledger_sql(schema: str) -> str:
    """Start tracking a ledger: its triggers, and its digest row computed from its rows.
    CREATE TRIGGER locks the ledger against writers until the transaction ends, so no
    write falls between the row's computation and the trigger."""
    ledger = ledger_name(schema)
    return (
        f"CREATE OR REPLACE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {ledger}"
        f" FOR EACH ROW WHEN (current_setting('{WRITER_SETTING}', true) IS DISTINCT FROM 'on')"
        f" EXECUTE FUNCTION {SYNC_FUNCTION}();\n"
        f"CREATE OR REPLACE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {ledger}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {SYNC_FUNCTION}();\n"
        + refresh_sql(schema)
    )


def refresh_sql(schema: str) -> str:
    """Recompute a ledger's digest row from its rows."""
    ledger = ledger_name(schema)
    return (
        f"INSERT INTO {DIGEST_TABLE} (schema_name, ledger, fingerprint, applied)"
        f" SELECT {quote_literal(schema)}, {quote_literal(ledger)}::regclass,"
        f" coalesce(bit_xor({row_hash_sql('version', 'checksum')}), 0), count(*) FROM {ledger}"
        " ON CONFLICT (schema_name) DO UPDATE SET ledger = EXCLUDED.ledger,"
        " fingerprint = EXCLUDED.fingerprint, applied = EXCLUDED.applied;\n"
    )


def writer_mark() -> str:
    """The select-list item that marks a transaction's ledger writes as archify's own
    (transaction_prelude adds it): the row trigger's WHEN skips them. It must be set
    before the ledger row is written, which is why every ledger write comes first in
    its transaction, before the migration's SQL (which might RESET ALL). writer_done
    ends it."""
    return f"set_config('{WRITER_SETTING}', 'on', true)"


def writer_done() -> str:
    """The statement after archify's own ledger writes: the mark is cleared before the
    migration's SQL (or a Python migration, or the seed hook) runs, so a write of theirs
    to the ledger is one the trigger applies like any other."""
    return f"SELECT set_config('{WRITER_SETTING}', 'off', true);\n"


def record_sql(schema: str, migration: Migration) -> str:
    """The ledger row of an applied migration and its digest, in one statement. The
    hash is the file's (the row holds the file's checksum), computed here."""
    return (
        f"WITH recorded AS (INSERT INTO {ledger_name(schema)} (version, checksum) VALUES"
        f" ({quote_literal(migration.version)}, {quote_literal(migration.checksum)}))\n"
        f"UPDATE {DIGEST_TABLE} SET fingerprint = fingerprint"
        f" # {row_hash(migration.version, migration.checksum)}, applied = applied + 1"
        f" WHERE schema_name = {quote_literal(schema)};\n"
    )


def unrecord_sql(schema: str, migration: Migration) -> str:
    """Delete a reverted migration's ledger row and take it out of the digest, with the
    checksum the row holds (which may differ from the file's)."""
    return (
        f"WITH removed AS (DELETE FROM {ledger_name(schema)}"
        f" WHERE version = {quote_literal(migration.version)} RETURNING version, checksum)\n"
        f"UPDATE {DIGEST_TABLE} d SET fingerprint = d.fingerprint"
        f" # {row_hash_sql('r.version', 'r.checksum')}, applied = d.applied - 1"
        f" FROM removed r WHERE d.schema_name = {quote_literal(schema)};\n"
    )


def forget_sql(schema: str) -> str:
    """Drop a dropped tenant's digest row (harmless if left: it names a ledger OID that
    no longer exists, so nothing trusts it)."""
    return f"DELETE FROM {DIGEST_TABLE} WHERE schema_name = {quote_literal(schema)};\n"


def catalog_columns(with_digest: bool) -> str:
    """The fleet catalog query's digest columns: NULL where the digest cannot be trusted."""
    if not with_digest:
        return "NULL::bigint AS fingerprint, NULL::int AS digest_rows"
    return "d.fingerprint, d.applied AS digest_rows"


def catalog_joins(with_digest: bool) -> str:
    """Joins for catalog_columns on the catalog query's `t` (registry) and `c` (ledger)."""
    if not with_digest:
        return ""
    return (
        f"LEFT JOIN pg_trigger tr ON tr.tgrelid = c.oid AND tr.tgname = '{ROW_TRIGGER}'"
        " AND tr.tgenabled IN ('O', 'A')\n"
        f"LEFT JOIN pg_trigger tt ON tt.tgrelid = c.oid AND tt.tgname = '{TRUNCATE_TRIGGER}'"
        " AND tt.tgenabled IN ('O', 'A')\n"
        f"LEFT JOIN {DIGEST_TABLE} d ON d.schema_name = t.schema_name AND d.ledger = c.oid"
        " AND tr.oid IS NOT NULL AND tt.oid IS NOT NULL"
        # a partitioned ledger's row trigger fires on its partitions, whose OIDs the
        # digest row does not name: such a digest is never kept, so never trusted
        " AND c.relkind = 'r'\n"
    )


# -- the same hash in Python ---------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # a rollout asks once per schema for the same few rows
def row_hash(version: str, checksum: str | None) -> int:
    """HASH_FUNCTION: the first 64 bits of md5(version, 0x1f, checksum), signed."""
    digest = hashlib.md5(f"{version}\x1f{checksum or ''}".encode(), usedforsecurity=False)
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


@functools.cache
def known_ledgers(migrations: tuple[Migration, ...]) -> dict[tuple[int, int], Mapping[str, str]]:
    """(fingerprint, rows) -> applied versions and checksums, for every ledger holding
    exactly the first k of `migrations` (k = 0..n) with the files' checksums. Any other
    ledger (a gap, an edited file, an unknown version) matches none and is read."""
    known: dict[tuple[int, int], Mapping[str, str]] = {(0, 0): MappingProxyType({})}
    fingerprint = 0
    applied: dict[str, str] = {}
    for count, m in enumerate(migrations, 1):
        fingerprint ^= row_hash(m.version, m.checksum)
        applied = {**applied, m.version: m.checksum}
        known[(fingerprint, count)] = MappingProxyType(applied)
    return known
