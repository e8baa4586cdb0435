"""SQL text building: identifier and literal quoting, and the per-migration script.

Pure functions. No identifier reaches SQL unquoted and no input string is
interpolated except through quote_ident / quote_literal.
"""

from __future__ import annotations

from .migration import Migration

# First half of the two-int advisory lock key; "ARCH" in ASCII. The second half
# is hashtext(schema), so every schema has its own lock.
ADVISORY_LOCK_CLASS = 0x41524348
# SQLSTATE our guard raises when another runner already applied (or reverted) the migration.
ALREADY_DONE = "AF001"
LEDGER_TABLE = "schema_migrations"


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, always double-quoted."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A standard-conforming string literal."""
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def ledger_name(schema: str) -> str:
    return f"{quote_ident(schema)}.{LEDGER_TABLE}"


def create_ledger_sql(schema: str) -> str:
    """The guide's ledger, plus checksum and duration; a no-op where it exists."""
    return (
        f"CREATE TABLE IF NOT EXISTS {ledger_name(schema)} (\n"
        "    version VARCHAR(255) PRIMARY KEY,\n"
        "    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n"
        "    checksum VARCHAR(64),\n"
        "    duration_ms INTEGER\n"
        ");\n"
        + upgrade_ledger_sql(schema)
    )


def upgrade_ledger_sql(schema: str) -> str:
    """Adopt a guide-shaped ledger by adding the columns Archify records."""
    return (
        f"ALTER TABLE {ledger_name(schema)} ADD COLUMN IF NOT EXISTS checksum VARCHAR(64), "
        "ADD COLUMN IF NOT EXISTS duration_ms INTEGER;\n"
    )


def millis(seconds: float | None) -> str:
    """A GUC duration value; 0 disables the timeout."""
    return quote_literal(f"{round(seconds * 1000) if seconds else 0}ms")


def schema_lock_sql(schema: str) -> str:
    return f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_CLASS}, hashtext({quote_literal(schema)}))"


def transaction_prelude(
    schema: str, *, lock_timeout: float | None, statement_timeout: float | None,
    runner_wait: float | None,
) -> str:
    """Lock the schema against other runners, then scope the transaction to it."""
    return (
        f"SET LOCAL lock_timeout = {millis(runner_wait)};\n"
        f"{schema_lock_sql(schema)};\n"
        f"SET LOCAL search_path TO {quote_ident(schema)};\n"
        f"SET LOCAL lock_timeout = {millis(lock_timeout)};\n"
        f"SET LOCAL statement_timeout = {millis(statement_timeout)};\n"
    )


def upgrade_script(
    schema: str,
    migration: Migration,
    *,
    ensure_ledger: bool,
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner_wait: float | None,
) -> str:
    """One round trip that applies one migration and records it, atomically.

    The guard makes a runner that lost the race for this schema stop with
    SQLSTATE AF001 instead of applying the migration a second time.
    """
    ledger = ledger_name(schema)
    version = quote_literal(migration.version)
    return _step_script(
        schema,
        (create_ledger_sql(schema) if ensure_ledger else "")
        + _guard(ledger, version, applied=True)
        + f"{migration.upgrade_sql.rstrip()}\n;\n"
        f"INSERT INTO {ledger} (version, checksum, duration_ms) VALUES ({version}, "
        f"{quote_literal(migration.checksum)}, "
        "(EXTRACT(EPOCH FROM clock_timestamp() - transaction_timestamp()) * 1000)::int);\n",
        lock_timeout=lock_timeout, statement_timeout=statement_timeout, runner_wait=runner_wait,
    )


def downgrade_script(
    schema: str,
    migration: Migration,
    *,
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner_wait: float | None,
) -> str:
    """One round trip that reverts one migration and deletes its ledger row, atomically."""
    if not migration.downgrade_sql:
        raise ValueError(f"{migration.version} has no downgrade SQL")
    ledger = ledger_name(schema)
    version = quote_literal(migration.version)
    return _step_script(
        schema,
        _guard(ledger, version, applied=False)
        + f"{migration.downgrade_sql.rstrip()}\n;\n"
        f"DELETE FROM {ledger} WHERE version = {version};\n",
        lock_timeout=lock_timeout, statement_timeout=statement_timeout, runner_wait=runner_wait,
    )


def _step_script(
    schema: str, body: str, *, lock_timeout: float | None, statement_timeout: float | None,
    runner_wait: float | None,
) -> str:
    return (
        "BEGIN;\n"
        + transaction_prelude(schema, lock_timeout=lock_timeout,
                              statement_timeout=statement_timeout, runner_wait=runner_wait)
        + body
        + "RESET ALL;\nCOMMIT;"
    )


def _guard(ledger: str, version: str, *, applied: bool) -> str:
    """Stop with AF001 if another runner already did this step (applied, or reverted)."""
    condition = "EXISTS" if applied else "NOT EXISTS"
    state = "already applied" if applied else "not applied"
    return (
        "DO $archify_guard$ BEGIN\n"
        f"  IF {condition} (SELECT 1 FROM {ledger} WHERE version = {version}) THEN\n"
        f"    RAISE EXCEPTION 'migration % is {state}', {version}\n"
        f"      USING ERRCODE = '{ALREADY_DONE}';\n"
        "  END IF;\n"
        "END $archify_guard$;\n"
    )


def creation_script(
    schema: str,
    migrations: tuple[Migration, ...],
    *,
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner_wait: float | None,
) -> tuple[str, list[tuple[int, int, str]]]:
    """The SQL that creates a tenant schema, its ledger and every migration's objects,
    to run inside the caller's transaction in one round trip.

    Also returns (start, end, version) character spans, so a server error's
    position can be traced back to the migration that caused it.
    """
    parts = [
        transaction_prelude(schema, lock_timeout=lock_timeout,
                            statement_timeout=statement_timeout, runner_wait=runner_wait),
        f"CREATE SCHEMA {quote_ident(schema)};\n",
        create_ledger_sql(schema),
    ]
    spans: list[tuple[int, int, str]] = []
    offset = sum(len(p) for p in parts)
    for m in migrations:
        body = f"{m.upgrade_sql.rstrip()}\n;\n"
        spans.append((offset, offset + len(body), m.version))
        record = (
            f"INSERT INTO {ledger_name(schema)} (version, checksum) VALUES "
            f"({quote_literal(m.version)}, {quote_literal(m.checksum)});\n"
        )
        parts += [body, record]
        offset += len(body) + len(record)
    return "".join(parts), spans


def drop_schema_sql(schema: str) -> str:
    return f"DROP SCHEMA {quote_ident(schema)} CASCADE"
