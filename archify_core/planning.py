"""Pure planning: from the migration set and each schema's ledger, what runs where.

No I/O happens here. Status, dry runs and rollouts all read these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .migration import Migration, MigrationSet, Scope

PUBLIC_SCHEMA = "public"


class LedgerShape(StrEnum):
    """What a schema's schema_migrations table looks like today."""

    MISSING = "missing"  # no ledger yet: create it with the first migration
    GUIDE = "guide"  # (version, applied_at) only: add checksum/duration columns
    CURRENT = "current"


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What the database says about one schema, read before planning."""

    schema: str
    kind: Scope  # Scope.PUBLIC or Scope.TENANT
    slug: str | None = None
    exists: bool = True
    ledger: LedgerShape = LedgerShape.CURRENT
    applied: Mapping[str, str | None] = field(default_factory=dict)  # version -> checksum
    problem: str | None = None  # the registry row cannot be trusted


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    """What will run in one schema, and why it may not run at all."""

    state: SchemaState
    pending: tuple[Migration, ...]
    blocked: str | None = None  # set when nothing may run here, with the reason

    @property
    def schema(self) -> str:
        return self.state.schema

    @property
    def has_work(self) -> bool:
        return bool(self.pending) and self.blocked is None


@dataclass(frozen=True, slots=True)
class Drift:
    """Where the files and a schema's ledger disagree."""

    edited: tuple[str, ...] = ()  # applied with another checksum than the file's
    missing_files: tuple[str, ...] = ()  # applied, but no file has this version
    out_of_order: tuple[str, ...] = ()  # pending, yet older than something applied

    def __bool__(self) -> bool:
        return bool(self.edited or self.missing_files or self.out_of_order)


def drift_of(migrations: MigrationSet, state: SchemaState) -> Drift:
    applied = state.applied
    edited = tuple(
        v for v, checksum in applied.items()
        if checksum and (m := migrations.get(v)) is not None and m.checksum != checksum
    )
    missing = tuple(sorted(v for v in applied if migrations.get(v) is None))
    newest = max(applied, default="")
    late = tuple(
        m.version for m in migrations.for_kind(state.kind)
        if m.version not in applied and m.version < newest
    )
    return Drift(edited=edited, missing_files=missing, out_of_order=late)


def plan_schema(
    migrations: MigrationSet, state: SchemaState, *, allow_out_of_order: bool = False
) -> SchemaPlan:
    """The pending migrations of one schema, in filename order."""
    pending = tuple(m for m in migrations.for_kind(state.kind) if m.version not in state.applied)
    return SchemaPlan(state, pending, _blocked(migrations, state, pending, allow_out_of_order))


def _blocked(
    migrations: MigrationSet, state: SchemaState, pending: tuple[Migration, ...],
    allow_out_of_order: bool,
) -> str | None:
    if state.problem:
        return state.problem
    if not pending:
        return None
    if not state.exists:
        return (
            f"schema {state.schema} does not exist; recreate it, or remove the tenant "
            "from public.tenants"
        )
    if not allow_out_of_order:
        late = drift_of(migrations, state).out_of_order
        if late:
            newest = max(state.applied)
            return (
                f"{', '.join(late)} is older than {newest}, which is already applied; "
                "renumber the new file after the newest applied migration, or pass "
                "--allow-out-of-order to apply it anyway"
            )
    return None
