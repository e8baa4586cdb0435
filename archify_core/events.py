"""Typed events emitted while a rollout runs.

Front ends subscribe with Engine(on_event=...): the CLI draws a progress bar,
the Airflow operators write task logs. Handlers are called in the engine's
task, so they must be quick and must not block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .report import AppliedMigration, RolloutReport, SchemaResult


@dataclass(frozen=True, slots=True)
class RolloutStarted:
    target: str
    schemas: int  # how many schemas are in scope (known before their ledgers are read)
    concurrency: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class SchemaStarted:
    schema: str
    pending: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MigrationApplied:
    schema: str
    migration: AppliedMigration


@dataclass(frozen=True, slots=True)
class MigrationRetrying:
    """A migration hit lock_timeout (or lost its connection) and will be tried again.
    `server_lost`: the connection was lost because the whole server was (a Notice said
    so once, for every schema it affects)."""

    schema: str
    version: str
    attempt: int
    delay_s: float
    reason: str
    server_lost: bool = False


@dataclass(frozen=True, slots=True)
class SchemaFinished:
    """Emitted for every schema in scope, including up-to-date and failed ones."""

    result: SchemaResult


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should know that is not a failure (e.g. reduced concurrency)."""

    message: str


@dataclass(frozen=True, slots=True)
class RolloutFinished:
    report: RolloutReport


Event = (
    RolloutStarted | SchemaStarted | MigrationApplied | MigrationRetrying | SchemaFinished
    | Notice | RolloutFinished
)
EventHandler = Callable[[Event], None]
