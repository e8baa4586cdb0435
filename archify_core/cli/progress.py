"""Turning engine events into output: the guide's log on stdout, progress on stderr.

- The log: the title once the rollout starts (configuration errors come first, with
  nothing printed before them), then per schema what it applied, as it finishes. A
  failure's cause is printed for its first few schemas only; the summary groups them.
- Progress: on a terminal, a live bar with the rate (schemas/s) and the time left;
  otherwise (CI, a log file) a plain line every few seconds. Never with --quiet.
- Notices and retries: on stderr, one line each, never wrapped. A retry after the
  whole server was lost is not repeated per schema: the server's notice said it.

Rich is imported only for a terminal's bar: a pipe or a log file does not pay for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import anyio

from ..events import Event, MigrationRetrying, Notice, RolloutStarted, SchemaFinished
from ..report import Outcome
from . import output
from .render import SCHEMA, plural, rollout_title, schema_lines

# between progress lines when stderr is not a terminal (ARCHIFY_PROGRESS_EVERY=seconds)
TICK_SECONDS = 5.0
CAUSE_LINES = 3  # schemas whose failure is printed in the log, per cause


class RolloutOutput:
    """An event handler for one rollout's output (see the module's docstring)."""

    def __init__(self, *, quiet: bool = False, log: bool = True,
                 sql: dict[str, str] | None = None, reverting: bool = False) -> None:
        self.quiet = quiet
        self.log = log and not quiet  # the per-schema log on stdout (not with --json)
        self.sql = sql  # dry runs: version -> the SQL that would run
        self.reverting = reverting
        self.title: str | None = None
        self.total = 0
        self.done = 0
        self.concurrency = 0
        self.started: float | None = None
        self._bar: Any = None  # a rich Progress on a terminal
        self._task: Any = None
        self._lines: list[str] = []  # log lines waiting for the bar's console
        self._causes: dict[tuple[str | None, str], int] = {}

    def __enter__(self) -> RolloutOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._flush_lines()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RolloutStarted):
            self._start(event)
        elif isinstance(event, SchemaFinished):
            self._finished(event)
        elif isinstance(event, MigrationRetrying):
            if not event.server_lost:
                self._note(f"  ↻ {event.schema}: {event.version} retry {event.attempt} in "
                           f"{event.delay_s:.1f} s ({event.reason})")
        elif isinstance(event, Notice):
            self._note(f"  ℹ {event.message}")

    def _start(self, event: RolloutStarted) -> None:
        """A rollout started; over a fleet, each database's adds to the totals."""
        first = self.started is None
        self.total += event.schemas
        self.concurrency += event.concurrency
        if first:
            self.started = time.monotonic()
            if self.log:
                self._print([self.title or rollout_title(event.target, event.dry_run)])
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)
        elif not self.quiet and self.total > 1 and output.stderr.is_terminal:
            self._bar, self._task = _terminal_bar(self.total, self.concurrency)

    def _finished(self, event: SchemaFinished) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        if not self.log:
            return
        result = event.result
        if result.outcome is Outcome.FAILED and result.failure is not None:
            key = (result.failure.version, result.failure.message.replace(result.schema, SCHEMA))
            seen = self._causes[key] = self._causes.get(key, 0) + 1
            if seen > CAUSE_LINES:
                return  # the summary names them all, grouped
            if seen == CAUSE_LINES:
                lines = schema_lines(result, self.sql, reverting=self.reverting)
                self._print([*lines, "    (further schemas failing this way are listed in "
                                     "the summary)"])
                return
        self._print(schema_lines(result, self.sql, reverting=self.reverting))

    def _print(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._bar is not None and output.stdout.is_terminal:
            self._lines += lines  # above the bar, in one print a tick (see ticking)
        else:
            output.stdout.lines(lines)

    def _note(self, text: str) -> None:
        if self._bar is not None:
            self._flush_lines()
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            output.stderr.line(text)
            output.stderr.flush()

    def _flush_lines(self) -> None:
        if self._lines and self._bar is not None:
            self._bar.console.print("\n".join(self._lines), markup=False, highlight=False,
                                    soft_wrap=True)
        elif self._lines:
            output.stdout.lines(self._lines)
        self._lines = []

    def progress_line(self) -> str | None:
        """`migrating: 1,234 of 10,000 schemas (12 %), 850 schemas/s, about 10 s left`."""
        if self.started is None or not self.total:
            return None
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else None
        eta = f", about {_duration(left)} left" if left is not None else ""
        return (f"archify: {self.done:,} of {plural(self.total, 'schema')} "
                f"({100 * self.done // self.total} %), {rate:,.0f} schemas/s{eta}, "
                f"{self.concurrency} at a time")

    @asynccontextmanager
    async def ticking(self) -> AsyncIterator[None]:
        """While the work runs: a progress line every TICK_SECONDS on a stderr that is not a
        terminal (a terminal has the bar), and the bar's log lines printed in batches."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _tick(self) -> None:
        every = _seconds_from_env("ARCHIFY_PROGRESS_EVERY", TICK_SECONDS)
        last = time.monotonic()
        while True:
            await anyio.sleep(0.1)
            self._flush_lines()
            if self._bar is not None or self.quiet or time.monotonic() - last < every:
                continue
            last = time.monotonic()
            line = self.progress_line()
            if line and self.done < self.total:
                output.stderr.line(line)
                output.stderr.flush()


def _seconds_from_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _terminal_bar(total: int, concurrency: int) -> tuple[Any, Any]:
    """A rich progress bar on stderr: done/total, rate, elapsed and time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} schemas/s" if speed else "… schemas/s")

    bar = Progress(
        TextColumn("[bold]migrating"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn(f"{concurrency} at a time"),
        console=Console(stderr=True, highlight=False), transient=True,
        redirect_stdout=False, redirect_stderr=False,
    )
    bar.start()
    return bar, bar.add_task("schemas", total=total)
