"""Applying one schema's plan against PostgreSQL: the only place migrations run.

Each migration is one round trip: BEGIN, the schema's advisory lock, SET LOCAL
search_path / lock_timeout / statement_timeout, its ledger row (whose unique
version stops a runner that got there first), the migration's SQL, COMMIT. So
a migration is applied and recorded wholly or not at all, and never twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import asyncpg
import pluggy

from .events import Event, MigrationApplied, MigrationRetrying, SchemaStarted
from .migration import Migration, Scope
from .planning import Direction, LedgerShape, SchemaPlan
from .plugins import call_hook, call_hook_quietly
from .report import AppliedMigration, Failure, Outcome, SchemaResult
from .sql import ledger_setup_sql
from .steps import ExecutionOptions, Step, usable

log = logging.getLogger("archify")

# lock_not_available (lock_timeout), deadlock_detected, serialization_failure:
# the migration did not run and may succeed on a later attempt.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
CONNECTION_ERRORS = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    # the server closed an idle connection (a restart's 57P01) and asyncpg's protocol is
    # still busy with that error: the next query is refused before it is sent
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
)


class _Retry(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class Lease:
    """A worker's connection, kept for its next steps and schemas (a pool acquire and
    release per migration is a good part of the client's CPU at fleet scale), replaced
    once it is closed. The worker gives it back whenever it would wait for work
    (Rollout._worker): a worker never holds a connection that the fleet reads, or
    another rollout on the same pool, could need to produce that work."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._conn is not None and not usable(self._conn):
            await self.release()  # a no-op for a connection the pool took back on closing
        if self._conn is None:
            self._conn = await self._pool.acquire()
        conn = self._conn
        try:
            yield conn
        except BaseException as exc:
            # a connection that failed other than by a server error (or that a server
            # error left in a transaction) is not trusted with the next step, nor the pool
            if usable(conn) and (conn.is_in_transaction()
                                 or not isinstance(exc, asyncpg.PostgresError)):
                conn.terminate()
            raise

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


async def apply_plan(
    lease: Lease,
    plan: SchemaPlan,
    options: ExecutionOptions,
    pm: pluggy.PluginManager,
    emit: Callable[[Event], None],
) -> SchemaResult:
    """Run one schema's pending migrations in order; stop that schema at the first failure."""
    state = plan.state
    result = SchemaResult(state.schema, state.slug, Outcome.UP_TO_DATE)
    started = time.perf_counter()
    emit(SchemaStarted(state.schema, tuple(m.version for m in plan.pending)))
    current: Migration | None = None
    try:
        await call_hook(
            pm, "archify_before_schema", schema=state.schema, slug=state.slug,
            pending=tuple(m.version for m in plan.pending),
        )
        digest = options.digest and state.kind is Scope.TENANT
        setup = ledger_setup_sql(state.schema, create=state.ledger is not LedgerShape.CURRENT,
                                 track=digest and not state.tracked)
        done = Outcome.MIGRATED if plan.direction is Direction.UP else Outcome.ROLLED_BACK
        for current in plan.pending:
            step = Step(state.schema, current, plan.direction, options, setup, digest)
            applied = await _apply_with_retries(lease, step, emit)
            if applied is not None:
                setup = ""  # committed with it (a step another runner did rolled back)
                result.applied.append(applied)
                result.outcome = done
                emit(MigrationApplied(state.schema, applied))
                await call_hook_quietly(
                    pm, "archify_after_migration", schema=state.schema, slug=state.slug,
                    applied=applied, direction=plan.direction.value,
                )
        current = None
    except Exception as exc:  # recorded in the result and reported; the fleet goes on
        result.outcome = Outcome.FAILED
        result.failure = failure_from(exc, current)
        await call_hook_quietly(
            pm, "archify_on_failure", schema=state.schema, slug=state.slug,
            version=current.version if current else None, error=_original(exc),
            failure=result.failure,
        )
    result.duration_ms = (time.perf_counter() - started) * 1000
    await call_hook_quietly(pm, "archify_after_schema", result=result)
    return result


async def _apply_with_retries(
    lease: Lease, step: Step, emit: Callable[[Event], None]
) -> AppliedMigration | None:
    """Run one step; None if another runner already did it."""
    options = step.options
    delay = options.retry_backoff
    for attempt in range(1, options.retries + 2):
        try:
            return await _apply_once(lease, step)
        except _Retry as retry:
            if attempt > options.retries:
                raise _GaveUp(retry.reason, attempt, retry.__cause__) from retry.__cause__
            emit(MigrationRetrying(step.schema, step.migration.version, attempt, delay,
                                   retry.reason))
            await anyio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class _GaveUp(Exception):
    def __init__(self, reason: str, attempts: int, cause: BaseException | None) -> None:
        tries = f"{attempts} attempts" if attempts > 1 else "1 attempt (retries are off)"
        super().__init__(f"{reason}; gave up after {tries}")
        self.attempts = attempts
        self.cause = cause


def _original(exc: BaseException) -> BaseException:
    """What plugins see: the server's error (LockNotAvailableError...), not our retry wrapper."""
    return exc.cause if isinstance(exc, _GaveUp) and exc.cause is not None else exc


async def _apply_once(lease: Lease, step: Step) -> AppliedMigration | None:
    started = time.perf_counter()
    try:
        async with lease.connection() as conn:
            try:
                if not await step.run(conn):
                    return None
            except asyncpg.PostgresError as exc:
                await _rollback(conn)
                if exc.sqlstate in RETRYABLE_SQLSTATES and step.retryable:
                    raise _Retry(_describe(exc)) from exc
                raise
    except asyncpg.TooManyConnectionsError as exc:  # another client took the slots meanwhile
        raise _Retry(f"no free connection slot: {_describe(exc)}") from exc
    except CONNECTION_ERRORS as exc:
        if not step.retryable:
            raise
        raise _Retry(f"connection lost: {_describe(exc)}") from exc
    return AppliedMigration(step.migration.version, (time.perf_counter() - started) * 1000)


async def _rollback(conn: asyncpg.Connection) -> None:
    """End the failed transaction. Best effort: when the connection is gone the server
    has rolled back already, and the error that brought us here is what gets reported
    (not asyncpg's complaint about a detached connection, or about a protocol still
    waiting for a server that shut down). A connection that cannot roll back is
    closed, never handed back to the pool mid-transaction."""
    try:
        if usable(conn) and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    except Exception:
        if usable(conn):
            conn.terminate()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


def failure_from(exc: BaseException, migration: Migration | None) -> Failure:
    """A Failure that names the migration and carries the server's SQLSTATE and message."""
    attempts = 1
    if isinstance(exc, _GaveUp):
        attempts = exc.attempts
        cause = exc.cause
        message = str(exc)
    else:
        cause = exc
        message = _describe(exc)
        if migration is None:
            message = f"{type(exc).__name__} in a before_schema hook: {message}"
    detail = getattr(cause, "detail", None)
    if detail:
        message += f" — {detail}"
    return Failure(
        message=message,
        version=migration.version if migration else None,
        sqlstate=getattr(cause, "sqlstate", None),
        error_type=type(cause).__name__ if cause is not None else type(exc).__name__,
        attempts=attempts,
    )
