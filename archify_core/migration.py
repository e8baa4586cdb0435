"""What a migration is: the values the loader produces and the planner reads."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# An `async def upgrade(conn)` / `downgrade(conn)` step, given an asyncpg connection.
PythonStep = Callable[[Any], Awaitable[object]]


class Scope(StrEnum):
    """Where a migration applies."""

    PUBLIC = "public"
    TENANT = "tenant"
    BOTH = "both"

    def applies_to_public(self) -> bool:
        return self in (Scope.PUBLIC, Scope.BOTH)

    def applies_to_tenants(self) -> bool:
        return self in (Scope.TENANT, Scope.BOTH)


@dataclass(frozen=True)
class Migration:
    """One validated migration file."""

    version: str
    scope: Scope
    description: str
    path: Path
    upgrade_sql: str  # empty for a Python migration
    downgrade_sql: str | None = None
    checksum: str = field(default="", compare=False)
    # False: run outside a transaction (e.g. CREATE INDEX CONCURRENTLY)
    transactional: bool = True
    upgrade_py: PythonStep | None = field(default=None, compare=False, repr=False)
    downgrade_py: PythonStep | None = field(default=None, compare=False, repr=False)
    # why the file is not ready to apply (its upgrade SQL has no statement yet), or None
    unfinished: str | None = None

    def __post_init__(self) -> None:
        if not self.checksum:
            object.__setattr__(self, "checksum", sql_checksum(self.upgrade_sql))

    @property
    def is_python(self) -> bool:
        return self.upgrade_py is not None

    def sql(self, up: bool) -> str | None:
        """The direction's SQL: empty for a Python upgrade, None for no SQL downgrade."""
        return self.upgrade_sql if up else self.downgrade_sql

    def python_step(self, up: bool) -> PythonStep | None:
        """The direction's Python function, if it has one: an upgrade in SQL may have a
        Python downgrade, and back."""
        return self.upgrade_py if up else self.downgrade_py

    def can_downgrade(self) -> bool:
        return bool(self.downgrade_sql) or self.downgrade_py is not None

    def applies_to(self, kind: Scope) -> bool:
        """Whether this migration runs in a schema of `kind` (public or tenant)."""
        if kind is Scope.PUBLIC:
            return self.scope.applies_to_public()
        return self.scope.applies_to_tenants()


def sql_checksum(sql: str) -> str:
    """The checksum recorded in the ledger: sha256 of the upgrade SQL, whitespace-trimmed."""
    return hashlib.sha256(sql.strip().encode("utf-8")).hexdigest()


class MigrationSet(Sequence[Migration]):
    """The validated migrations of a folder, in filename order."""

    def __init__(self, migrations: Sequence[Migration], directory: Path | None = None) -> None:
        self._migrations = tuple(migrations)
        self._by_version = {m.version: m for m in self._migrations}
        # Planning asks for these once or twice per schema: computed once, not per tenant.
        self._by_kind = {kind: tuple(m for m in self._migrations if m.applies_to(kind))
                         for kind in (Scope.PUBLIC, Scope.TENANT)}
        self.directory = directory

    def __getitem__(self, index):  # type: ignore[override]
        return self._migrations[index]

    def __len__(self) -> int:
        return len(self._migrations)

    def __iter__(self) -> Iterator[Migration]:
        return iter(self._migrations)

    def get(self, version: str) -> Migration | None:
        return self._by_version.get(version)

    def for_kind(self, kind: Scope) -> tuple[Migration, ...]:
        """The migrations that run in a schema of `kind`, in order."""
        return self._by_kind[kind]

    def unfinished(self, *kinds: Scope) -> list[Migration]:
        """The files not ready to apply (Migration.unfinished) among those of `kinds`
        (every kind when none is given)."""
        kinds = kinds or (Scope.PUBLIC, Scope.TENANT)
        return [m for m in self._migrations
                if m.unfinished and any(m.applies_to(kind) for kind in kinds)]
