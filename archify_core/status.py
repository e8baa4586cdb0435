"""Fleet status as values: what each schema has applied and what is pending. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .migration import MigrationSet
from .planning import Drift, SchemaState, drift_of, plan_schema


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    schema: str
    slug: str | None
    applied: tuple[str, ...]
    pending: tuple[str, ...]
    drift: Drift = field(default_factory=Drift)
    problem: str | None = None  # why this schema cannot be migrated as it is
    unfinished: tuple[str, ...] = ()  # pending versions whose file is not written yet

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.slug is not None:
            data["slug"] = self.slug
            data["schema"] = self.schema
        data["applied"] = list(self.applied)
        data["pending"] = list(self.pending)
        if self.drift:
            data["drift"] = {
                "edited": list(self.drift.edited),
                "missing_files": list(self.drift.missing_files),
                "out_of_order": list(self.drift.out_of_order),
            }
        if self.problem:
            data["problem"] = self.problem
        if self.unfinished:
            data["unfinished"] = list(self.unfinished)
        return data


@dataclass(frozen=True, slots=True)
class FleetStatus:
    public: SchemaStatus
    tenants: list[SchemaStatus]
    registry_exists: bool = True

    @property
    def pending_count(self) -> int:
        return len(self.public.pending) + sum(len(t.pending) for t in self.tenants)

    def to_dict(self) -> dict[str, Any]:
        return {
            "public": self.public.to_dict(),
            "tenants": [t.to_dict() for t in self.tenants],
            "registry_exists": self.registry_exists,  # False: run `archify public` first
        }


def schema_status(migrations: MigrationSet, state: SchemaState) -> SchemaStatus:
    plan = plan_schema(migrations, state)
    return SchemaStatus(
        schema=state.schema,
        slug=state.slug,
        applied=tuple(sorted(state.applied)),
        pending=tuple(m.version for m in plan.pending),
        drift=drift_of(migrations, state),
        problem=plan.blocked,
        unfinished=tuple(m.version for m in plan.pending if m.unfinished),
    )


def schema_statuses(migrations: MigrationSet, states: Iterable[SchemaState]) -> list[SchemaStatus]:
    """schema_status of every state, each distinct ledger planned once: a fleet's tenants
    mostly share one ledger, and planning one costs ~17 µs (0.17 s at 10,000 tenants),
    copying its status to another schema ~3 µs. A schema that is missing or has a problem
    of its own is planned alone: its status names it."""
    planned: dict[tuple[object, ...], SchemaStatus] = {}
    statuses = []
    for state in states:
        if not state.exists or state.problem:
            statuses.append(schema_status(migrations, state))
            continue
        key = (state.kind, *state.applied.items())
        alike = planned.get(key)
        if alike is None:
            planned[key] = alike = schema_status(migrations, state)
            statuses.append(alike)
        else:
            statuses.append(replace(alike, schema=state.schema, slug=state.slug))
    return statuses
