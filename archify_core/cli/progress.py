"""Turning engine events into output: a progress bar on a terminal, lines otherwise."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..events import Event, MigrationRetrying, Notice, RolloutStarted, SchemaFinished
from .render import schema_lines


class RolloutOutput:
    """An event handler that prints the guide's per-schema log as schemas finish,
    with a live progress bar when the output is a terminal (plain lines otherwise)."""

    def __init__(self, out: Console, *, quiet: bool = False,
                 sql: dict[str, str] | None = None) -> None:
        self.out = out
        self.quiet = quiet
        self.sql = sql  # dry runs: version -> the SQL that would run
        self.err = Console(file=sys.stderr)
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> RolloutOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RolloutStarted):
            self._start(event)
        elif isinstance(event, SchemaFinished):
            if not self.quiet:
                for line in schema_lines(event.result, self.sql):
                    self.out.print(line, highlight=False, markup=False)
            if self._progress is not None and self._task is not None:
                self._progress.advance(self._task)
        elif isinstance(event, MigrationRetrying):
            self.err.print(
                f"  ↻ {event.schema}: {event.version} retry {event.attempt} in "
                f"{event.delay_s:.1f} s ({event.reason})", highlight=False, markup=False)
        elif isinstance(event, Notice):
            self.err.print(f"  ℹ {event.message}", highlight=False, markup=False)

    def _start(self, event: RolloutStarted) -> None:
        # Same console as the log, so rich keeps the bar below the lines it prints.
        if not self.out.is_terminal or event.schemas < 2:
            return
        self._progress = Progress(
            TextColumn("[bold]migrating"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn(f"{event.concurrency} at a time"),
            console=self.out, transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("schemas", total=event.schemas)
