"""Results as values: what a rollout did, per schema, JSON-able.

The CLI, the Airflow operators and the tests all read these same objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    MIGRATED = "migrated"  # something was applied
    ROLLED_BACK = "rolled_back"  # something was reverted
    UP_TO_DATE = "up_to_date"  # nothing was pending
    FAILED = "failed"
    SKIPPED = "skipped"  # not started: --max-failures was reached, or the server was lost
    PLANNED = "planned"  # dry run: this would run


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: str
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a schema stopped. `version` is None when no migration was running."""

    message: str
    version: str | None = None
    sqlstate: str | None = None
    error_type: str | None = None
    attempts: int = 1


@dataclass(slots=True)
class SchemaResult:
    schema: str
    slug: str | None
    outcome: Outcome
    applied: list[AppliedMigration] = field(default_factory=list)
    failure: Failure | None = None
    duration_ms: float = 0.0
    pending: list[str] = field(default_factory=list)  # dry run: what would run
    skipped_because: str | None = None  # why a skipped schema never started
    database: str | None = None  # the fleet database it belongs to (None: a lone engine)

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.FAILED

    def to_dict(self) -> dict[str, Any]:
        return _dictify(asdict(self))


@dataclass(slots=True)
class RolloutReport:
    """The outcome of one call to migrate(): every schema it touched or tried."""

    target: str
    schemas: list[SchemaResult] = field(default_factory=list)
    duration_s: float = 0.0
    dry_run: bool = False
    stopped_early: bool = False  # --max-failures (or a lost server) stopped new schemas

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.schemas)

    @property
    def failed(self) -> list[SchemaResult]:
        return [r for r in self.schemas if r.outcome is Outcome.FAILED]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.schemas if r.outcome is outcome)

    def applied_count(self) -> int:
        return sum(len(r.applied) for r in self.schemas)

    def summary(self) -> dict[str, int]:
        counts = {o.value: self.count(o) for o in Outcome}
        return {"schemas": len(self.schemas), "applied": self.applied_count(), **counts}

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "dry_run": self.dry_run,
            "stopped_early": self.stopped_early,
            "duration_s": round(self.duration_s, 3),
            "summary": self.summary(),
            "schemas": [r.to_dict() for r in self.schemas],
        }


def _dictify(value: Any) -> Any:
    """asdict() leaves enums as enums; JSON wants their values."""
    if isinstance(value, dict):
        return {k: _dictify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dictify(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, float):
        return round(value, 3)
    return value
