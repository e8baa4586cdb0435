"""Applying one schema's plan against PostgreSQL: the only place migrations run.

Each migration is one round trip: BEGIN, the schema's advisory lock, SET LOCAL
search_path / lock_timeout / statement_timeout, its ledger row (whose unique
version stops a runner that got there first), the migration's SQL, COMMIT. So
a migration is applied and recorded wholly or not at all, and never twice.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import asyncpg
import pluggy

from .events import Event, MigrationApplied, MigrationRetrying, SchemaStarted
from .migration import Migration, Scope
from .planning import Direction, LedgerShape, SchemaPlan
from .plugins import call_hook, call_hook_quietly
from .quoting import LEDGER_TABLE, ledger_name, quote_literal
from .report import AppliedMigration, Failure, Outcome, SchemaResult
from .server_watch import (
    CONNECTION_ERRORS,
    ServerWatch,
    is_connection_error,
    loss_reason,
    server_error,
)
from .sql import BATCH_SETTING, batch_mark, batch_position_sql, ledger_setup_sql
from .steps import ExecutionOptions, Step, one_sql_transaction, usable

log = logging.getLogger("archify")

# lock_not_available (lock_timeout), deadlock_detected, serialization_failure:
# the migration did not run and may succeed on a later attempt.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every step of a rollout runs with: its options, the plugins, where events go,
    and the watch on the server that its workers share (None: no waiting for a lost
    server, each lost attempt is one of the step's retries)."""

    options: ExecutionOptions
    pm: pluggy.PluginManager
    emit: Callable[[Event], None]
    watch: ServerWatch | None = None
    database: str | None = None  # the engine's name in a fleet


class _Retry(Exception):
    def __init__(self, reason: str, *, lost: bool = False) -> None:
        self.reason = reason
        self.lost = lost  # the connection was lost: the attempt may have committed


LOST = "connection lost: "


def _retry(cause: BaseException, prefix: str = "") -> _Retry:
    """A failed attempt worth another, for the reason `cause` gives."""
    retry = _Retry(prefix + _describe(cause))
    retry.__cause__ = cause
    return retry


def _lost(cause: BaseException) -> _Retry:
    """An attempt whose connection was lost, said in words (server_watch.loss_reason); its
    cause is the server's own error when it sent one (a terminated backend's 57P01)."""
    retry = _Retry(LOST + loss_reason(cause), lost=True)
    retry.__cause__ = server_error(cause)
    return retry


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


class SchemaRun:
    """One schema's plan being applied: its result, its events and hooks, and where it is.
    apply_plan drives it one step per round trip; apply_batch carries the steps of
    several runs in one."""

    def __init__(self, plan: SchemaPlan, ctx: RunContext) -> None:
        self.plan, self.ctx = plan, ctx
        self.options, self.pm, self.emit = ctx.options, ctx.pm, ctx.emit
        options = ctx.options
        state = plan.state
        self.result = SchemaResult(state.schema, state.slug, Outcome.UP_TO_DATE,
                                   database=ctx.database)
        self.started = time.perf_counter()
        self.digest = options.digest and state.kind is Scope.TENANT
        self.setup = ledger_setup_sql(state.schema, create=state.ledger is not LedgerShape.CURRENT,
                                      track=self.digest and not state.tracked)
        self.done = 0  # steps of plan.pending settled (applied, or done by another runner)

    @property
    def failed(self) -> bool:
        return self.result.outcome is Outcome.FAILED

    def steps(self) -> list[Step]:
        """The steps still to run; the ledger setup goes with the first (it commits with
        it, and a later step runs only after the earlier ones committed)."""
        return [self._step(m, self.setup if i == 0 else "")
                for i, m in enumerate(self.plan.pending[self.done:])]

    def next_step(self) -> Step:
        return self._step(self.plan.pending[self.done], self.setup)

    def _step(self, migration: Migration, setup: str) -> Step:
        return Step(self.plan.state.schema, migration, self.plan.direction, self.options,
                    setup, self.digest)

    async def begin(self) -> bool:
        """SchemaStarted and the before_schema hooks; False if a hook failed the schema."""
        state = self.plan.state
        pending = tuple(m.version for m in self.plan.pending)
        self.emit(SchemaStarted(state.schema, pending))
        try:
            await call_hook(self.pm, "archify_before_schema", schema=state.schema,
                            slug=state.slug, pending=pending, database=self.ctx.database)
        except Exception as exc:
            await self.fail(exc, None)
            return False
        return True

    async def settle_step(self, applied: AppliedMigration | None) -> None:
        """The next step is done: by us (`applied`), or by another runner (None, its
        transaction rolled back, so the ledger setup is still to run)."""
        self.done += 1
        if applied is None:
            return
        self.setup = ""
        state = self.plan.state
        self.result.applied.append(applied)
        self.result.outcome = (Outcome.MIGRATED if self.plan.direction is Direction.UP
                               else Outcome.ROLLED_BACK)
        self.emit(MigrationApplied(state.schema, applied))
        await call_hook_quietly(self.pm, "archify_after_migration", schema=state.schema,
                                slug=state.slug, applied=applied,
                                direction=self.plan.direction.value,
                                database=self.ctx.database)

    async def run_rest(self, lease: Lease, first_failure: _Retry | None = None) -> None:
        """Run the remaining steps one round trip each, stopping at the first failure
        (`first_failure`: the next step's first attempt failed already, in a batch)."""
        step: Step | None = None
        try:
            while self.done < len(self.plan.pending):
                step = self.next_step()
                await self.settle_step(await _apply_with_retries(lease, step, self.ctx,
                                                                 first_failure))
                first_failure = None
        except Exception as exc:  # recorded in the result and reported; the fleet goes on
            await self.fail(exc, step.migration if step else None)

    def skip(self) -> None:
        self.result.outcome = Outcome.SKIPPED
        self.result.pending = [m.version for m in self.plan.pending]

    async def fail(self, exc: BaseException, migration: Migration | None) -> None:
        state = self.plan.state
        self.result.outcome = Outcome.FAILED
        self.result.failure = failure_from(exc, migration)
        await call_hook_quietly(
            self.pm, "archify_on_failure", schema=state.schema, slug=state.slug,
            version=migration.version if migration else None, error=_original(exc),
            failure=self.result.failure, database=self.ctx.database,
        )

    async def finish(self) -> SchemaResult:
        self.result.duration_ms = (time.perf_counter() - self.started) * 1000
        await call_hook_quietly(self.pm, "archify_after_schema", result=self.result)
        return self.result


async def apply_plan(lease: Lease, plan: SchemaPlan, ctx: RunContext) -> SchemaResult:
    """Run one schema's pending migrations in order; stop that schema at the first failure."""
    run = SchemaRun(plan, ctx)
    if await run.begin():
        await run.run_rest(lease)
    return await run.finish()


async def _send_batch(lease: Lease, script: str, token: str,
                      steps: int) -> tuple[int, asyncpg.PostgresError | None]:
    """(how many of the batch's transactions committed, the error that stopped it). A lost
    connection is raised as it is: the server's own reason (a terminated backend's 57P01),
    not what asyncpg says of the next call on a connection that is gone."""
    async with lease.connection() as conn:
        try:
            await conn.execute(f"{script}RESET {BATCH_SETTING};")
        except asyncpg.PostgresError as exc:
            if is_connection_error(exc) or not usable(conn):
                raise
            await _rollback(conn)
            mark, _ = await conn.fetchrow(batch_position_sql())
            return (int(mark.removeprefix(token)) + 1 if mark and mark.startswith(token)
                    else 0), exc
    return steps, None


async def _committed_after_loss(lease: Lease, steps: list[Step], ctx: RunContext) -> int | None:
    """How many of these steps (sent in order, on a connection that was lost) committed:
    the ledgers say, read on a new connection once the server answers (ctx.watch). None
    when the server cannot be asked. They committed in order, so it is the steps whose
    ledger shows them done, up to the first that does not."""

    async def read() -> dict[int, bool]:
        async with lease.connection() as conn:  # (the lease replaces the lost connection)
            ledgers = set(await conn.fetchval(
                "SELECT coalesce(array_agg(s), '{}') FROM unnest($1::text[]) s"
                f" WHERE to_regclass(format('%I.%I', s, '{LEDGER_TABLE}')) IS NOT NULL",
                sorted({step.schema for step in steps})))
            checks = [f"SELECT {i}, EXISTS (SELECT 1 FROM {ledger_name(step.schema)}"
                      f" WHERE version = {quote_literal(step.migration.version)})"
                      for i, step in enumerate(steps) if step.schema in ledgers]
            return dict(await conn.fetch("\nUNION ALL\n".join(checks))) if checks else {}

    try:
        recorded = await (ctx.watch.retrying(read) if ctx.watch is not None else read())
    except (asyncpg.PostgresError, *CONNECTION_ERRORS):
        return None
    done = 0
    for i, step in enumerate(steps):
        if i not in recorded or recorded[i] != step.up:  # applied: recorded; reverted: not
            break
        done += 1
    return done


def batchable(plan: SchemaPlan) -> bool:
    """Whether every pending step of a plan is one SQL transaction (see apply_batch)."""
    return bool(plan.pending) and all(one_sql_transaction(m, plan.direction)
                                      for m in plan.pending)


_batch_ids = itertools.count(1)


async def apply_batch(
    lease: Lease,
    plans: Sequence[SchemaPlan],
    ctx: RunContext,
    stop: Callable[[int], bool] = lambda failures: False,
) -> list[SchemaResult]:
    """Run several schemas' plans (each `batchable`) in one round trip: each step still its
    own transaction, with its own lock, scope and ledger row, one after the other.

    The server stops at the first error in the string: the transactions before it have
    committed, the failed one rolled back, the rest never ran. Each transaction sets a
    session setting as it ends (sql.BATCH_SETTING), so the setting names the last one
    that committed and the error is the next one's, precisely. That step is settled as
    apply_plan would settle it (done by another runner, or its first attempt failed, to
    be retried); the schemas after it go on one round trip at a time.

    A step whose SQL does not parse is the exception: the server parses the whole string
    before it runs any of it, so a syntax error in a later step refuses the batch whole.
    The error's position says which step it is; when that is not the step after the last
    one committed, nothing ran, and every schema of the batch runs alone, where the
    broken migration fails in its own round trip, named, after the ones before it.

    When the connection is lost mid-batch, the ledgers say what committed (read on a new
    connection, once the server answers), and the loss is the next step's first attempt;
    if the server cannot be asked, every schema of the batch runs again step by step
    (each lost attempt is checked against its ledger the same way).
    `stop(failures)`: whether the rollout stops once this batch has that many failed
    schemas; the schemas the batch never reached are then skipped. Each applied
    migration's duration is the batch's round trip.
    """
    runs = [SchemaRun(plan, ctx) for plan in plans]
    ready = [run for run in runs if await run.begin()]
    batch = [(run, step) for run in ready for step in run.steps()]
    token = f"{next(_batch_ids)}:"
    pieces = [step.script(batch_mark(f"{token}{i}") if i < len(batch) - 1 else "")
              for i, (_, step) in enumerate(batch)]
    started = time.perf_counter()
    committed: int | None = 0
    error: asyncpg.PostgresError | None = None
    lost: BaseException | None = None
    try:
        if batch:  # (none when every schema failed in a before_schema hook)
            committed, error = await _send_batch(lease, "".join(pieces), token, len(batch))
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        lost = exc
        committed = await _committed_after_loss(lease, [step for _, step in batch], ctx)
    elapsed = (time.perf_counter() - started) * 1000
    known = committed or 0
    for run, step in batch[:known]:
        await run.settle_step(AppliedMigration(step.migration.version, elapsed))
    refused = error is not None and _refused_whole(error, pieces, known)
    if known < len(batch) and (error is not None or lost is not None) and not refused:
        run, step = batch[known]
        if error is not None and step.done_already(error):
            await run.settle_step(None)
        elif lost is not None:
            await run.run_rest(lease, _lost(lost))  # the batch was its first attempt
        elif error is not None and error.sqlstate in RETRYABLE_SQLSTATES:
            await run.run_rest(lease, _retry(error))
        else:
            await run.fail(error, step.migration)
    failures = sum(run.failed for run in runs)
    for run in ready:
        if run.failed:
            continue
        if (error or lost) is not None and run.done == 0 and stop(failures):
            run.skip()  # it never ran (the batch stopped before it), and the rollout stops
            continue
        await run.run_rest(lease)  # (nothing left, for a schema whose steps all committed)
        failures += run.failed
    return [await run.finish() for run in runs]


def _refused_whole(error: asyncpg.PostgresError, pieces: Sequence[str], committed: int) -> bool:
    """Whether the server refused a batch before running any of it: its error's position
    (a syntax error's) lies in another step than the one that ran after the last commit."""
    position = getattr(error, "position", None)
    if not position or not str(position).isdigit():
        return False
    starts = list(itertools.accumulate((len(p) for p in pieces[:-1]), initial=0))
    return bisect.bisect_right(starts, int(position) - 1) - 1 != committed


async def _apply_with_retries(
    lease: Lease, step: Step, ctx: RunContext, failed: _Retry | None = None
) -> AppliedMigration | None:
    """Run one step; None if another runner already did it. `failed`: the first attempt
    was made (in a batch) and failed with a retryable error.

    After an attempt whose connection was lost, the step's ledger says whether it
    committed (once the server answers again, see ServerWatch): if it did, it is reported
    applied, as it was; if the server cannot be asked, the step fails saying so."""
    options = step.options
    delay = options.retry_backoff
    in_doubt = False  # an earlier attempt was lost: its commit may be what we meet next
    for attempt in range(1, options.retries + 2):
        started = time.perf_counter()
        try:
            if failed is None:
                applied = await _apply_once(lease, step)
                if applied is None and in_doubt:  # our own lost attempt had committed
                    return AppliedMigration(step.migration.version,
                                            (time.perf_counter() - started) * 1000)
                return applied
            raise failed
        except _Retry as retry:
            failed = None
            outages = ctx.watch.outages if ctx.watch is not None else 0
            if retry.lost:
                in_doubt = True
                committed = await _committed_after_loss(lease, [step], ctx)
                if committed:
                    return AppliedMigration(step.migration.version,
                                            (time.perf_counter() - started) * 1000)
                if committed is None:
                    raise _GaveUp(f"{retry.reason}; the server could not be asked whether "
                                  f"{step.migration.version} committed before that (`archify "
                                  "status` tells)", attempt, retry.__cause__) from retry.__cause__
            if attempt > options.retries:
                raise _GaveUp(retry.reason, attempt, retry.__cause__) from retry.__cause__
            server_lost = ctx.watch is not None and ctx.watch.outages != outages
            ctx.emit(MigrationRetrying(step.schema, step.migration.version, attempt, delay,
                                       retry.reason, server_lost=server_lost))
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
                    raise _retry(exc) from exc
                raise
    except asyncpg.TooManyConnectionsError as exc:  # another client took the slots meanwhile
        raise _retry(exc, "no free connection slot: ") from exc
    except CONNECTION_ERRORS as exc:
        if not step.retryable:
            raise
        raise _lost(exc) from server_error(exc)
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
        if is_connection_error(exc):
            cause = server_error(exc)
            message = LOST + loss_reason(exc)
        else:
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
