"""The three ways one migration step runs in one schema.

- SQL (the usual case): one round trip carrying BEGIN, the schema's advisory
  lock, SET LOCAL scope and timeouts, the ledger row (with the ledger's
  digest; when reverting, the already-done guard and the row's deletion), the
  SQL and COMMIT.
- Python (`async def upgrade(conn)`): the same transaction, driven from the
  client, with the migration's function called in the middle.
- Outside a transaction (`# MIGRATION_TRANSACTION: false`, for statements such
  as CREATE INDEX CONCURRENTLY): a session advisory lock, each statement on
  its own, then the ledger row. A failure part-way leaves the statements
  before it in place (see docs/writing-migrations.md).

Each returns True when it did the step, False when another runner had already
done it, and raises the server's error otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg

from .digest import writer_mark
from .migration import Migration
from .planning import Direction
from .sql import (
    downgrade_script,
    guard_sql,
    is_guard_stop,
    is_recorded_already,
    ledger_name,
    ledger_write_sql,
    lock_key,
    millis,
    quote_ident,
    split_statements,
    transaction_prelude,
    upgrade_script,
)


@dataclass(frozen=True, slots=True)
class ExecutionOptions:
    """How migrations run. Times are seconds; None or 0 means no limit."""

    lock_timeout: float | None = 5.0
    statement_timeout: float | None = None
    runner_wait: float | None = 120.0  # wait for another runner holding the schema's lock
    retries: int = 3  # extra attempts after lock timeouts or lost connections
    retry_backoff: float = 0.5  # seconds before the first retry; doubles each time
    # how long a rollout waits for a server that went away before it gives up on it
    server_wait: float = 60.0
    digest: bool = False  # keep tenant ledgers' digests (the engine sets it, see digest.py)

    @property
    def timeouts(self) -> dict[str, float | None]:
        return {"lock_timeout": self.lock_timeout, "statement_timeout": self.statement_timeout,
                "runner_wait": self.runner_wait}


@dataclass(frozen=True, slots=True)
class Step:
    """Apply (UP) or revert (DOWN) one migration in one schema."""

    schema: str
    migration: Migration
    direction: Direction
    options: ExecutionOptions
    ledger_setup: str = ""  # create/adopt/track the ledger first (sql.ledger_setup_sql)
    digest: bool = False  # write the ledger row with its digest (digest.py)

    @property
    def up(self) -> bool:
        return self.direction is Direction.UP

    @property
    def retryable(self) -> bool:
        """Whether a failed attempt may simply be run again. Not outside a transaction:
        the statements sent before the failure stay (e.g. an INVALID index left by
        CREATE INDEX CONCURRENTLY, which must be dropped by hand first)."""
        return self.migration.transactional

    async def run(self, conn: asyncpg.Connection) -> bool:
        python_step = self.migration.python_step(self.up)
        if python_step is not None:
            return await self._python(conn, python_step)
        if not self.migration.transactional:
            return await self._outside_transaction(conn)
        return await self._script(conn)

    def script(self, before_commit: str = "") -> str:
        build = upgrade_script if self.up else downgrade_script
        return build(self.schema, self.migration, ledger_setup=self.ledger_setup,
                     digest=self.digest, before_commit=before_commit, **self.options.timeouts)

    async def _script(self, conn: asyncpg.Connection) -> bool:
        try:
            await conn.execute(self.script())
        except asyncpg.PostgresError as exc:
            if not self.done_already(exc):
                raise
            await conn.execute("ROLLBACK")
            return False
        return True

    async def _python(
        self, conn: asyncpg.Connection, step: Callable[[asyncpg.Connection], Awaitable[None]]
    ) -> bool:
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(self._opening())
                await step(conn)
                await conn.execute("RESET ALL;")
            except BaseException:
                # (not `async with`: on a lost connection its rollback would raise asyncpg's
                # "the underlying connection is closed" in place of the server's reason)
                await _abandon(conn, transaction)
                raise
            await transaction.commit()
        except asyncpg.PostgresError as exc:
            if not self.done_already(exc):
                raise
            return False
        return True

    async def _outside_transaction(self, conn: asyncpg.Connection) -> bool:
        sql = self.migration.sql(self.up)
        assert sql is not None
        key = lock_key(self.schema)
        await conn.execute(f"SET lock_timeout = {millis(self.options.runner_wait)}; "
                           f"SELECT pg_advisory_lock({key})")
        try:
            if self.ledger_setup:
                await conn.execute(self.ledger_setup)
            applied = await conn.fetchval(
                f"SELECT count(*) FROM {ledger_name(self.schema)} WHERE version = $1",
                self.migration.version)
            if bool(applied) == self.up:
                return False
            await conn.execute(
                f"SET search_path TO {quote_ident(self.schema)}; "
                f"SET lock_timeout = {millis(self.options.lock_timeout)}; "
                f"SET statement_timeout = {millis(self.options.statement_timeout)}")
            for statement in split_statements(sql):
                await conn.execute(statement)
            # one implicit transaction: the mark is local to it
            mark = f"SELECT {writer_mark()};\n" if self.digest else ""
            await conn.execute(mark + self._ledger_write())
            return True
        finally:
            # shielded: a cancelled rollout must not hand the pool a connection that
            # still holds the schema's session lock (or our session settings)
            with anyio.CancelScope(shield=True):
                await _release_session(conn, key)

    def done_already(self, exc: BaseException) -> bool:
        """Whether a server error says another runner did this step first."""
        return is_guard_stop(exc) or is_recorded_already(exc, self.schema, self.migration.version)

    def _opening(self) -> str:
        """Lock, scope, guard (reverting) and the ledger write: the start of a
        client-driven transaction, before the migration's function runs."""
        prelude = (transaction_prelude(self.schema, digest=self.digest, **self.options.timeouts)
                   + self.ledger_setup)
        if self.up:
            return prelude + self._ledger_write()
        return prelude + guard_sql(self.schema, self.migration.version) + self._ledger_write()

    def _ledger_write(self) -> str:
        return ledger_write_sql(self.schema, self.migration, up=self.up, digest=self.digest)


def one_sql_transaction(migration: Migration, direction: Direction) -> bool:
    """Whether a step is one SQL transaction (not Python, not outside a transaction):
    what a batch of several schemas' steps can carry (execution.apply_batch)."""
    return (migration.python_step(direction is Direction.UP) is None
            and migration.transactional)


def usable(conn: asyncpg.Connection) -> bool:
    """Open, and still ours: a pooled connection that closes (a terminated backend, our
    own terminate()) goes back to its pool by itself, and then refuses every call."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _abandon(conn: asyncpg.Connection, transaction: Any) -> None:
    """Roll back a failed client-driven transaction where the connection still can; a
    connection that cannot is closed (the step's own error is what the caller reports)."""
    if not usable(conn):
        return
    try:
        with anyio.CancelScope(shield=True):
            await transaction.rollback()
    except Exception:
        conn.terminate()


async def _release_session(conn: asyncpg.Connection, key: str) -> None:
    """Undo a session-level step's lock and settings; a connection where that fails is
    closed, never returned to the pool holding them."""
    if not usable(conn):
        return
    try:
        await conn.execute(f"RESET ALL; SELECT pg_advisory_unlock({key})")
    except Exception:  # the step's own error, if any, is what the caller reports
        conn.terminate()
