"""SQL text building: the ledger, and the script of each migration step.

Pure functions. Identifiers and strings go through quoting.py (whose names are
imported from here too).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from . import digest as digest_sql
from .migration import Migration
from .quoting import LEDGER_TABLE, ledger_name, quote_ident, quote_literal

# First half of the two-int advisory lock key; "ARCH" in ASCII. The second half
# is hashtext(schema), so every schema has its own lock.
ADVISORY_LOCK_CLASS = 0x41524348
# Marks the error our guard raises when another runner already reverted a step.
GUARD_MARK = "archify-guard"


def create_ledger_sql(schema: str) -> str:
    """The guide's ledger, plus a checksum; a no-op where it exists."""
    return (
        f"CREATE TABLE IF NOT EXISTS {ledger_name(schema)} (\n"
        "    version VARCHAR(255) PRIMARY KEY,\n"
        "    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n"
        "    checksum VARCHAR(64)\n"
        ");\n"
        + upgrade_ledger_sql(schema)
    )


def upgrade_ledger_sql(schema: str) -> str:
    """Adopt a guide-shaped ledger: add the checksum column, and make sure versions are
    unique (the guide's table has them as its primary key; a hand-made one may not),
    because the ledger row written first is what stops a second runner."""
    ledger = ledger_name(schema)
    return (
        f"ALTER TABLE {ledger} ADD COLUMN IF NOT EXISTS checksum VARCHAR(64);\n"
        "DO $archify_adopt$ DECLARE duplicated text; BEGIN\n"
        "  IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a\n"
        "                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]\n"
        f"                 WHERE i.indrelid = {quote_literal(ledger)}::regclass\n"
        "                   AND i.indisunique AND i.indnatts = 1 AND a.attname = 'version') THEN\n"
        f"    CREATE UNIQUE INDEX ON {ledger} (version);\n"
        "  END IF;\n"
        # raised again without the table's name: see is_recorded_already
        "EXCEPTION WHEN unique_violation THEN\n"
        "  GET STACKED DIAGNOSTICS duplicated = PG_EXCEPTION_DETAIL;\n"
        "  RAISE unique_violation USING MESSAGE = format(\n"
        f"    'cannot adopt %s: its versions are not unique', {quote_literal(ledger)}),\n"
        "    DETAIL = duplicated, HINT = 'delete the duplicate rows, then run archify again';\n"
        "END $archify_adopt$;\n"
    )


@functools.lru_cache(maxsize=64)  # the same few timeouts in every script
def millis(seconds: float | None) -> str:
    """A GUC duration value; 0 disables the timeout."""
    # rounded up: a tiny positive timeout must not become 0, which means no limit
    return quote_literal(f"{math.ceil(seconds * 1000) if seconds else 0}ms")


def lock_key(schema: str) -> str:
    """The arguments of the schema's advisory lock: pg_advisory_*lock(<key>)."""
    return f"{ADVISORY_LOCK_CLASS}, hashtext({quote_literal(schema)})"


def transaction_prelude(
    schema: str, *, lock_timeout: float | None, statement_timeout: float | None,
    runner_wait: float | None, digest: bool = False,
) -> str:
    """Lock the schema against other runners, then scope the transaction to it.

    Two statements: the first bounds the wait for another runner; the second takes
    the lock and only then (target lists evaluate in order) sets the schema's
    search_path and the migration's own timeouts, all LOCAL to the transaction
    (and, with `digest`, marks its ledger writes as archify's: digest.writer_mark).
    """
    return (
        f"SET LOCAL lock_timeout = {millis(runner_wait)};\n"
        f"SELECT pg_advisory_xact_lock({lock_key(schema)}),"
        f" set_config('search_path', {quote_literal(quote_ident(schema))}, true),"
        f" set_config('lock_timeout', {millis(lock_timeout)}, true),"
        f" set_config('statement_timeout', {millis(statement_timeout)}, true)"
        + (f", {digest_sql.writer_mark()}" if digest else "") + ";\n"
    )


def upgrade_script(
    schema: str,
    migration: Migration,
    *,
    ledger_setup: str = "",
    digest: bool = False,
    before_commit: str = "",
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner_wait: float | None,
) -> str:
    """One round trip that applies one migration and records it, atomically.

    `ledger_setup` (see ledger_setup_sql) runs first; then the ledger row is
    written (with its digest when `digest`), before the migration's SQL: a
    runner that lost the race for this schema (it waited on the lock while
    another applied the migration) stops on the ledger's unique version before
    running anything, see `is_recorded_already`, instead of applying the
    migration a second time.
    """
    return _step_script(
        schema,
        ledger_setup
        + ledger_write_sql(schema, migration, up=True, digest=digest)
        + f"{migration.upgrade_sql.rstrip()}\n;\n"
        + session_reset(migration.upgrade_sql)
        + before_commit,
        lock_timeout=lock_timeout, statement_timeout=statement_timeout, runner_wait=runner_wait,
        digest=digest,
    )


def downgrade_script(
    schema: str,
    migration: Migration,
    *,
    ledger_setup: str = "",
    digest: bool = False,
    before_commit: str = "",
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner_wait: float | None,
) -> str:
    """One round trip that reverts one migration and deletes its ledger row, atomically.
    The row goes first, as in upgrades: what the downgrade SQL does to the session
    (RESET ALL) cannot change how it is written."""
    if not migration.downgrade_sql:
        raise ValueError(f"{migration.version} has no downgrade SQL")
    return _step_script(
        schema,
        ledger_setup
        + guard_sql(schema, migration.version)
        + ledger_write_sql(schema, migration, up=False, digest=digest)
        + f"{migration.downgrade_sql.rstrip()}\n;\n"
        + session_reset(migration.downgrade_sql)
        + before_commit,
        lock_timeout=lock_timeout, statement_timeout=statement_timeout, runner_wait=runner_wait,
        digest=digest,
    )


def ledger_setup_sql(schema: str, *, create: bool, track: bool) -> str:
    """What a schema's first step runs before its ledger row: create or adopt the ledger
    (`create`), and start keeping its digest (`track`, see digest.py)."""
    return ((create_ledger_sql(schema) if create else "")
            + (digest_sql.track_ledger_sql(schema) if track else ""))


def record_sql(schema: str, migration: Migration, *, digest: bool = False) -> str:
    """The ledger row of an applied migration (and its digest: digest.record_sql)."""
    if digest:
        return digest_sql.record_sql(schema, migration)
    return (
        f"INSERT INTO {ledger_name(schema)} (version, checksum) VALUES "
        f"({quote_literal(migration.version)}, {quote_literal(migration.checksum)});\n"
    )


def writes_done(digest: bool) -> str:
    """After archify's own ledger writes (digest.writer_done)."""
    return digest_sql.writer_done() if digest else ""


def ledger_write_sql(schema: str, migration: Migration, *, up: bool, digest: bool) -> str:
    """A step's ledger write: the row recorded (upgrade) or deleted (downgrade), with its
    digest when `digest`, and the end of archify's writer mark."""
    write = record_sql if up else unrecord_sql
    return write(schema, migration, digest=digest) + writes_done(digest)


def is_recorded_already(exc: BaseException, schema: str, version: str) -> bool:
    """Whether a server error is the ledger refusing this very version because it has it
    already: another runner applied the migration while this one waited for the
    schema's lock. Only the untranslated parts of the error are read (its fields, and
    the key in its detail: `Key (version)=(003_x) already exists` in English), so it holds
    whatever the server's lc_messages. Adopting a ledger with duplicate versions fails
    with 23505 too, and must be reported: upgrade_ledger_sql raises that one again
    without the table's name."""
    return (getattr(exc, "sqlstate", None) == "23505"
            and getattr(exc, "schema_name", None) == schema
            and getattr(exc, "table_name", None) == LEDGER_TABLE
            and f"(version)=({version})" in (getattr(exc, "detail", None) or ""))


def unrecord_sql(schema: str, migration: Migration, *, digest: bool = False) -> str:
    if digest:
        return digest_sql.unrecord_sql(schema, migration)
    return (f"DELETE FROM {ledger_name(schema)} "
            f"WHERE version = {quote_literal(migration.version)};\n")


def _step_script(
    schema: str, body: str, *, lock_timeout: float | None, statement_timeout: float | None,
    runner_wait: float | None, digest: bool,
) -> str:
    return (
        "BEGIN;\n"
        + transaction_prelude(schema, lock_timeout=lock_timeout,
                              statement_timeout=statement_timeout, runner_wait=runner_wait,
                              digest=digest)
        + body
        + "COMMIT;"
    )


# A session setting (not LOCAL) that each transaction of a batch sets as it ends: a
# failed transaction's own setting is rolled back with it, so after an error the setting
# names the last transaction of the batch that committed (execution.apply_batch).
BATCH_SETTING = "archify.batch_step"


def batch_mark(token: str) -> str:
    """The last statement before a batched transaction's COMMIT: see BATCH_SETTING."""
    return f"SELECT set_config('{BATCH_SETTING}', {quote_literal(token)}, false);\n"


def batch_position_sql() -> str:
    """The mark the last committed transaction of a batch left (NULL if none did), cleared
    in the same statement."""
    return (f"SELECT current_setting('{BATCH_SETTING}', true),"
            f" set_config('{BATCH_SETTING}', '', false)")


def guard_sql(schema: str, version: str) -> str:
    """Stop a rollback step if another runner already reverted it (the version is no
    longer in the ledger). Upgrades rely on the ledger's unique version instead (free).

    A statement of its own, after the lock, so its snapshot sees what the other
    runner committed while we waited. Plain SQL rather than a DO block (which
    compiles PL/pgSQL on every call): when the step is done already, the CASE
    yields a marked string whose cast to int fails.
    """
    literal = quote_literal(version)
    message = quote_literal(f"{GUARD_MARK}: migration {version} is not applied")
    return (f"SELECT CAST(CASE WHEN NOT EXISTS (SELECT 1 FROM {ledger_name(schema)} "
            f"WHERE version = {literal}) THEN {message} END AS int);\n")


def is_guard_stop(exc: BaseException) -> bool:
    """Whether a server error is our guard saying the step was done already."""
    return getattr(exc, "sqlstate", None) == "22P02" and GUARD_MARK in str(exc)


@functools.cache
def session_reset(sql: str) -> str:
    """RESET ALL when the migration may change a session setting: it would outlive the
    transaction on a pooled connection. Any SET, RESET or set_config anywhere in the
    SQL counts (a DO block's `PERFORM set_config(..., false)`, dynamic SQL, and `ALTER
    ... SET DEFAULT` too: a needless RESET ALL costs a statement, a missed one leaks a
    setting into later work). Free for SQL without them. Cached: a rollout asks once
    per migration, not once per schema."""
    return "RESET ALL;\n" if _MAY_SET.search(sql) else ""


_MAY_SET = re.compile(r"(?i)\b(set|reset|set_config)\b")


@dataclass(frozen=True, slots=True)
class CreationChunk:
    """Part of a new tenant's creation, run inside one transaction: a SQL string (with
    (start, end, version) spans to trace a server error's position back to its
    migration), or a Python migration to call (its ledger row is written before it)."""

    sql: str = ""
    spans: tuple[tuple[int, int, str], ...] = ()
    python: Migration | None = None


def creation_chunks(
    schema: str,
    migrations: tuple[Migration, ...],
    *,
    digest: bool = False,
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner_wait: float | None,
) -> list[CreationChunk]:
    """What creates a tenant schema, its ledger (tracked by the digest when `digest`)
    and every migration's objects: one SQL round trip when every migration is SQL,
    split around Python migrations. The ledger rows go first, as in upgrade_script."""
    chunks: list[CreationChunk] = []
    parts = [
        transaction_prelude(schema, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                            runner_wait=runner_wait, digest=digest),
        f"CREATE SCHEMA {quote_ident(schema)};\n",
        ledger_setup_sql(schema, create=True, track=digest),
        *(record_sql(schema, m, digest=digest) for m in migrations),
        writes_done(digest),
    ]
    spans: list[tuple[int, int, str]] = []
    for m in migrations:
        if m.is_python:
            chunks.append(CreationChunk("".join(parts), tuple(spans)))
            chunks.append(CreationChunk(python=m))
            parts, spans = [], []
        else:
            offset = sum(len(p) for p in parts)
            # a new tenant's tables are empty and unseen: CONCURRENTLY buys nothing here
            sql = m.upgrade_sql if m.transactional else without_concurrently(m.upgrade_sql)
            body = f"{sql.rstrip()}\n;\n"
            spans.append((offset, offset + len(body), m.version))
            parts.append(body)
    if parts:
        chunks.append(CreationChunk("".join(parts), tuple(spans)))
    return chunks


def drop_schema_sql(schema: str) -> str:
    return f"DROP SCHEMA {quote_ident(schema)} CASCADE"


def split_statements(sql: str) -> list[str]:
    """Split SQL into statements at top-level semicolons, respecting quotes, dollar
    quotes and comments. Used only for migrations that run outside a transaction,
    where each statement must be sent on its own."""
    statements: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            i = sql.find(c, i + 1)
            while i != -1 and i + 1 < n and sql[i + 1] == c:  # doubled quote
                i = sql.find(c, i + 2)
            i = n if i == -1 else i + 1
        elif sql.startswith("--", i):
            i = n if (j := sql.find("\n", i)) == -1 else j + 1
        elif sql.startswith("/*", i):
            i = n if (j := sql.find("*/", i + 2)) == -1 else j + 2
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(tag.group(0), tag.end())
            i = n if end == -1 else end + len(tag.group(0))
        elif c == ";":
            statements.append(sql[start:i])
            i = start = i + 1
        else:
            i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _is_code(s)]


def _is_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without_comments.strip())


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_CONCURRENTLY = re.compile(
    r"\b((?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+)\s+)CONCURRENTLY\s+",
    re.IGNORECASE,
)


def without_concurrently(sql: str) -> str:
    """The same SQL able to run inside a transaction: for a brand-new tenant, whose tables
    nobody else uses yet, building an index concurrently buys nothing."""
    return _CONCURRENTLY.sub(r"\1", sql)
