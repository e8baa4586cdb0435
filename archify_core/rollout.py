"""Running many schema plans at once: bounded, isolated, stoppable.

A fixed set of workers (the concurrency) pulls plans from a small buffer that
the producer fills while it reads ledgers batch by batch, so memory stays
proportional to the concurrency and the batch, not to the fleet. Each plan's
failure is caught and recorded by apply_plan; only --max-failures stops new
schemas from starting, and it lets in-flight ones finish.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import anyio
import asyncpg
import pluggy

from .events import Event, SchemaFinished
from .execution import ExecutionOptions, Lease, apply_plan
from .planning import SchemaPlan
from .report import Failure, Outcome, RolloutReport, SchemaResult


@dataclass(slots=True)
class Rollout:
    pool: asyncpg.Pool
    options: ExecutionOptions
    pm: pluggy.PluginManager
    emit: Callable[[Event], None]
    report: RolloutReport
    concurrency: int
    max_failures: int | None = None
    _failures: int = field(default=0, init=False)

    @property
    def stopping(self) -> bool:
        return self.max_failures is not None and self._failures >= self.max_failures

    def record(self, result: SchemaResult) -> None:
        if result.outcome is Outcome.FAILED:
            self._failures += 1
        self.report.schemas.append(result)
        self.emit(SchemaFinished(result))

    async def run(self, plans: AsyncIterable[SchemaPlan]) -> None:
        """Apply every plan; settle plans without work (or after a stop) without a worker."""
        send, receive = anyio.create_memory_object_stream[SchemaPlan](self.concurrency)
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
                    if self.stopping:
                        self.record(self.settle(plan))
                    else:
                        self.record(await apply_plan(lease, plan, self.options, self.pm,
                                                     self.emit))
                    if not plans.statistics().current_buffer_used:
                        # about to wait for work: the reads that produce it may need
                        # this connection (a small pool, two rollouts on one engine)
                        await lease.release()
        finally:
            with anyio.CancelScope(shield=True):  # cancelled or not, the pool gets it back
                await lease.release()

    def settle(self, plan: SchemaPlan) -> SchemaResult:
        result = settled(plan, stopped=self.stopping)
        if result.outcome is Outcome.SKIPPED:
            self.report.stopped_early = True
        return result

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
