"""Pure planning: from the migration set and each schema's ledger, what runs where.

No I/O happens here. Status, dry runs and rollouts all read these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .migration import Migration, MigrationSet, Scope

PUBLIC_SCHEMA = "public"


class Direction(StrEnum):
    """Which way a plan runs: apply migrations, or revert them."""

    UP = "up"
    DOWN = "down"


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
    tracked: bool = False  # the ledger's digest is kept (digest.py)
    from_digest: bool = False  # `applied` came from the digest: no need to read the ledger


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    """What will run in one schema, and why it may not run at all."""

    state: SchemaState
    pending: tuple[Migration, ...]  # in the order they run (newest first when reverting)
    blocked: str | None = None  # set when nothing may run here, with the reason
    direction: Direction = Direction.UP

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
    if not allow_out_of_order and state.applied:
        newest = max(state.applied)
        late = [m.version for m in pending if m.version < newest]
        if late:
            return (
                f"{', '.join(late)} is older than {newest}, which is already applied; "
                "renumber the new file after the newest applied migration, or pass "
                "--allow-out-of-order to apply it anyway"
            )
    return None


def rollback_problem(
    migrations: MigrationSet, kind: Scope, *, to: str | None, steps: int | None
) -> str | None:
    """Why a rollback of `kind` schemas with these arguments cannot be planned, if it
    cannot: checked before connecting (the CLI) and before reading (the engine)."""
    if (to is None) == (steps is None):
        return "rollback needs exactly one of --to VERSION or --steps N"
    if steps is not None and steps < 1:
        return f"--steps must be at least 1, not {steps}"
    if to is not None:
        target = migrations.get(to)
        if target is None:
            return f"--to {to}: no migration file has this version"
        if not target.applies_to(kind):
            # every migration of these schemas would be "after" it: refuse, do not guess
            return f"--to {to}: that migration is not applied to {kind} schemas"
    return None


def plan_rollback(
    migrations: MigrationSet, state: SchemaState, *, to: str | None = None,
    steps: int | None = None,
) -> SchemaPlan:
    """The applied migrations to revert in one schema, newest first.

    `to=VERSION` reverts everything applied after VERSION (VERSION stays);
    `steps=N` reverts the newest N. Every one of them must have a file with
    downgrade SQL, or nothing is reverted in this schema.
    """
    if (to is None) == (steps is None):
        raise ValueError("give exactly one of `to` and `steps`")
    newest_first = sorted(state.applied, reverse=True)
    chosen = newest_first[:steps] if steps is not None else [v for v in newest_first if v > to]
    found = tuple(migrations.get(v) for v in chosen)
    reverting = tuple(m for m in found if m is not None)
    return SchemaPlan(state, reverting, _rollback_blocked(state, chosen, reverting),
                      Direction.DOWN)


def _rollback_blocked(
    state: SchemaState, chosen: list[str], reverting: tuple[Migration, ...]
) -> str | None:
    if state.problem:
        return state.problem
    if not chosen:
        return None
    if not state.exists:
        return f"schema {state.schema} does not exist"
    missing = sorted(set(chosen) - {m.version for m in reverting})
    if missing:
        return (f"cannot roll back {', '.join(missing)}: no migration file has this version; "
                "restore the file (with its downgrade SQL) first")
    no_downgrade = [m.version for m in reverting if not m.can_downgrade()]
    if no_downgrade:
        return (f"{', '.join(no_downgrade)} has no downgrade SQL; nothing was rolled back in "
                f"{state.schema}. Add DOWNGRADE_SQL (or downgrade()) to the file")
    return None
