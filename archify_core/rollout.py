"""Running many schema plans at once: bounded, isolated, stoppable.

A fixed set of workers (the concurrency) pulls plans from a small buffer that
the producer fills while it reads ledgers batch by batch, so memory stays
proportional to the concurrency and the batch, not to the fleet. A worker takes
the plans ready behind the one it got, up to batch_size, and sends those made
of SQL transactions in one round trip (execution.apply_batch). Each plan's
failure is caught and recorded by apply_plan; only --max-failures, or a server
given up on (server_watch.ServerWatch), stops new schemas from starting, and
in-flight ones finish.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field

import anyio
import asyncpg

from .events import SchemaFinished
from .execution import Lease, RunContext, apply_batch, apply_plan, batchable
from .planning import Direction, SchemaPlan
from .report import Failure, Outcome, RolloutReport, SchemaResult

# A batch stops growing once its migrations' SQL reaches this size: big migrations (a
# seed, a long function) gain nothing from sharing a round trip.
BATCH_BYTES = 64 * 1024
MAX_FAILURES_REACHED = "--max-failures reached"
SERVER_GONE = "the server could not be reached"


def _sql_size(plan: SchemaPlan) -> int:
    up = plan.direction is Direction.UP
    return sum(len(m.sql(up) or "") for m in plan.pending)


@dataclass(slots=True)
class Rollout:
    pool: asyncpg.Pool
    ctx: RunContext
    report: RolloutReport
    concurrency: int
    max_failures: int | None = None
    batch_size: int = 1  # schemas per round trip (see execution.apply_batch)
    _failures: int = field(default=0, init=False)

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        """Why no more schemas start, if they don't."""
        if self.ctx.watch is not None and self.ctx.watch.gave_up:
            return SERVER_GONE
        if self.stops_after(0):
            return MAX_FAILURES_REACHED
        return None

    def stops_after(self, failures: int) -> bool:
        """Whether the rollout stops once `failures` more schemas have failed."""
        if self.ctx.watch is not None and self.ctx.watch.gave_up:
            return True
        return self.max_failures is not None and self._failures + failures >= self.max_failures

    def record(self, result: SchemaResult) -> None:
        if result.outcome is Outcome.FAILED:
            self._failures += 1
        if result.outcome is Outcome.SKIPPED:
            self.report.stopped_early = True
            result.skipped_because = result.skipped_because or self.stop_reason
        self.report.schemas.append(result)
        self.ctx.emit(SchemaFinished(result))

    async def run(self, plans: AsyncIterable[SchemaPlan]) -> None:
        """Apply every plan; settle plans without work (or after a stop) without a worker."""
        # room for a batch per worker, so a worker finds one ready when it asks
        send, receive = anyio.create_memory_object_stream[SchemaPlan](
            self.concurrency * self.batch_size)
        async with anyio.create_task_group() as tg:
            for _ in range(self.concurrency):
                tg.start_soon(self._worker, receive.clone())
            receive.close()
            async with send:
                async for plan in plans:
                    if not plan.has_work or self.stopping:
                        self.record(self.settle(plan))
                    else:
                        await send.send(plan)

    async def _worker(self, plans: anyio.abc.ObjectReceiveStream[SchemaPlan]) -> None:
        lease = Lease(self.pool)
        try:
            async with plans:
                async for plan in plans:
                    for group in self._batches(plan, plans):
                        await self._apply(lease, group)
                    if not plans.statistics().current_buffer_used:
                        # about to wait for work: the reads that produce it may need
                        # this connection (a small pool, two rollouts on one engine)
                        await lease.release()
        finally:
            with anyio.CancelScope(shield=True):  # cancelled or not, the pool gets it back
                await lease.release()

    def _batches(self, plan: SchemaPlan,
                 plans: anyio.abc.ObjectReceiveStream[SchemaPlan]) -> list[list[SchemaPlan]]:
        """`plan` and the plans ready behind it (up to batch_size and BATCH_BYTES): those
        that can share a round trip together, each other one on its own."""
        taken, size = [plan], _sql_size(plan)
        while len(taken) < self.batch_size and size < BATCH_BYTES:
            try:
                taken.append(plans.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            size += _sql_size(taken[-1])
        together: list[SchemaPlan] = []
        alone = []
        for p in taken:
            if batchable(p):
                together.append(p)
            else:
                alone.append([p])
        return ([together] if together else []) + alone

    async def _apply(self, lease: Lease, plans: list[SchemaPlan]) -> None:
        if self.stopping:
            for plan in plans:
                self.record(self.settle(plan))
        elif len(plans) == 1:
            self.record(await apply_plan(lease, plans[0], self.ctx))
        else:
            for result in await apply_batch(lease, plans, self.ctx, self.stops_after):
                self.record(result)

    def settle(self, plan: SchemaPlan) -> SchemaResult:
        return settled(plan, stopped=self.stopping)

def settled(plan: SchemaPlan, *, stopped: bool = False) -> SchemaResult:
    """The result of a plan that needs no worker: blocked, up to date, or skipped."""
    state = plan.state
    if plan.blocked is not None:
        return SchemaResult(state.schema, state.slug, Outcome.FAILED,
                            failure=Failure(plan.blocked))
    if not plan.pending:
        return SchemaResult(state.schema, state.slug, Outcome.UP_TO_DATE)
    assert stopped
    return SchemaResult(state.schema, state.slug, Outcome.SKIPPED,
                        pending=[m.version for m in plan.pending])


def planned(plan: SchemaPlan) -> SchemaResult:
    """A dry run's result: what would run here (what would be reverted, for a rollback)."""
    if plan.blocked is not None or not plan.pending:
        return settled(plan)
    state = plan.state
    return SchemaResult(state.schema, state.slug, Outcome.PLANNED,
                        pending=[m.version for m in plan.pending])
