"""What linting finds: JSON-able values the CLI, the engine's notices and tests read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a migration file does that is unsafe on a live fleet.

    `silenced` is the reason given when a comment or the configuration allows it
    (None: it stands). `table` is the table the statement touches, when it has one;
    `stakes` what the fleet puts at risk on it (only with a database).
    """

    rule: str
    severity: Severity
    file: str
    line: int
    message: str
    safe: str
    version: str = ""
    table: str | None = None
    silenced: str | None = None
    stakes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity.value}

    def describe(self) -> str:
        """One line: where, what, and what the fleet stakes on it."""
        stakes = f" ({self.stakes})" if self.stakes else ""
        return f"{self.file}:{self.line}: {self.severity.value} {self.rule}: {self.message}{stakes}"


@dataclass(slots=True)
class LintReport:
    """Every finding of the files linted, and notes on what could not be linted (a
    Python migration whose SQL is not a literal)."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def standing(self) -> list[Finding]:
        """The findings no comment or configuration silenced."""
        return [f for f in self.findings if f.silenced is None]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.standing if f.severity is Severity.ERROR]

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "notes": list(self.notes)}
