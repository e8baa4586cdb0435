"""Structural drift: tenants whose schema no longer looks like the others' (pure).

Not checksum drift (a migration file edited after it was applied, see status.py): here
the ledgers may agree while a tenant got an index by hand, or lost a constraint. From
each schema's fingerprint, and the structures of one schema per fingerprint, this
groups the tenants, picks the reference (the largest group, or the structure the
migration files build) and says how every other group differs from it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError
from .structure import Structure

REFERENCES = ("majority", "migrations")
_INDEX_ON = re.compile(r" ON (?:ONLY )?(\S+) USING \w+ (\(.*\))")
# A name in a table's "columns (id, \"Full name\", ...)", as quote_ident writes it
_COLUMN = re.compile(r'"(?:[^"]|"")*"|[^", ]+')
_TABLES = ("table", "foreign table")  # their definition: their columns, in order


@dataclass(frozen=True, slots=True)
class Difference:
    """How one object of a schema differs from the reference's."""

    change: str  # "extra", "missing" or "differs"
    kind: str
    name: str
    definition: str | None  # the schema's (None when missing)
    reference: str | None  # the reference's (None when extra)

    def describe(self) -> str:
        if self.change == "extra":
            return f"extra {self.kind} {self.name}{_detail(self.kind, self.definition)}"
        if self.change == "missing":
            return f"missing {self.kind} {self.name}{_detail(self.kind, self.reference)}"
        if self.kind == "column":
            return f"{self.name} is {self.definition}, reference {self.reference}"
        if self.kind in ("function", "procedure"):
            how = _function_change(self.definition, self.reference)
            return f"{self.kind} {self.name} {how}"
        if self.kind in _TABLES:
            return f"{self.kind} {self.name} has {self.definition}, reference {self.reference}"
        if self.kind == "type":
            return f"type {self.name} is {self.definition}, reference {self.reference}"
        return f"{self.kind} {self.name} is {self.definition!r}, reference {self.reference!r}"

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "kind": self.kind, "name": self.name,
                "definition": self.definition, "reference": self.reference,
                "description": self.describe()}


def _function_change(mine: str | None, theirs: str | None) -> str:
    """How a function's definition ("returns …; language …; volatile; body <md5>") differs:
    "returns bigint, reference integer, and has another body" (not "; ": that parts the
    differences of a report's line)."""
    ours = dict(part.split(" ", 1) for part in (mine or "").split("; ") if " " in part)
    ref = dict(part.split(" ", 1) for part in (theirs or "").split("; ") if " " in part)
    mine_flags = set((mine or "").split("; ")) - {f"{k} {v}" for k, v in ours.items()}
    ref_flags = set((theirs or "").split("; ")) - {f"{k} {v}" for k, v in ref.items()}
    changes = [f"{key} {ours.get(key)}, reference {ref.get(key)}"
               for key in ("returns", "language") if ours.get(key) != ref.get(key)]
    if mine_flags != ref_flags:
        changes.append(f"is {', '.join(sorted(mine_flags))}, reference "
                       f"{', '.join(sorted(ref_flags))}")
    if ours.get("body") != ref.get("body"):
        changes.append("has another body")
    return ", and ".join(changes) or "differs from the reference's"


def _columns(definition: str | None) -> list[str]:
    return _COLUMN.findall((definition or "").removeprefix("columns (").removesuffix(")"))


def _same_order(mine: str | None, theirs: str | None) -> bool:
    """Whether the columns both tables have come in the same order in each."""
    ours, ref = _columns(mine), _columns(theirs)
    shared = set(ours) & set(ref)
    return [c for c in ours if c in shared] == [c for c in ref if c in shared]


def _detail(kind: str, definition: str | None) -> str:
    if not definition:
        return ""
    if kind == "index":
        match = _INDEX_ON.search(definition)
        return f" on {match[1]}{match[2]}" if match else f" ({definition})"
    if kind in ("constraint", "column", "type"):
        return f" ({definition})"
    return ""


@dataclass(frozen=True, slots=True)
class DriftGroup:
    """Tenants that differ from the reference in exactly the same way."""

    schemas: tuple[str, ...]
    fingerprint: str
    differences: tuple[Difference, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schemas": list(self.schemas), "fingerprint": self.fingerprint,
                "differences": [d.to_dict() for d in self.differences]}


@dataclass(frozen=True, slots=True)
class StructuralDriftReport:
    """Every tenant schema against one reference structure."""

    against: str  # "majority" or "migrations"
    reference_fingerprint: str | None  # None: no tenants, and no reference
    alike: tuple[str, ...]  # the schemas with the reference's structure
    groups: tuple[DriftGroup, ...] = field(default=())

    @property
    def drifted(self) -> list[str]:
        return sorted(s for g in self.groups for s in g.schemas)

    @property
    def ok(self) -> bool:
        return not self.groups

    def lines(self) -> list[str]:
        """One line per group: "tenant_acme: extra index ...; users.bio is ..."."""
        lines = []
        for group in self.groups:
            names = ", ".join(group.schemas[:5])
            if len(group.schemas) > 5:
                names += f" and {len(group.schemas) - 5} more"
            changes = "; ".join(d.describe() for d in group.differences) or \
                "differs from the reference"
            lines.append(f"{names}: {changes}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"against": self.against, "reference_fingerprint": self.reference_fingerprint,
                "ok": self.ok, "alike": len(self.alike), "drifted": self.drifted,
                "groups": [g.to_dict() for g in self.groups]}


def group_by_fingerprint(fingerprints: Mapping[str, str]) -> dict[str, list[str]]:
    """fingerprint -> its schemas (sorted), the largest group first (ties: by first schema)."""
    groups: dict[str, list[str]] = {}
    for schema in sorted(fingerprints):
        groups.setdefault(fingerprints[schema], []).append(schema)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0])))


def differences(structure: Structure, reference: Structure) -> tuple[Difference, ...]:
    """What `structure` has, lacks or defines otherwise than `reference`, in a fixed order."""
    found = []
    for key in sorted(structure.keys() | reference.keys()):
        mine, theirs = structure.get(key), reference.get(key)
        if mine == theirs:
            continue
        change = "extra" if theirs is None else "missing" if mine is None else "differs"
        if key[0] in _TABLES and change == "differs" and _same_order(mine, theirs):
            continue  # only extra or missing columns: said by the columns themselves
        found.append(Difference(change, key[0], key[1], mine, theirs))
    return tuple(found)


def structure_digest(structure: Structure) -> str:
    """A structure's own fingerprint: equal structures, equal digests."""
    lines = sorted(f"{kind} {name} {definition}"
                   for (kind, name), definition in structure.items())
    return hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest()


def compare(
    fingerprints: Mapping[str, str],
    structures: Mapping[str, Structure],
    reference: Structure | None = None,
    *,
    against: str,
) -> StructuralDriftReport:
    """The report, against `reference` (None: the structure most schemas share).

    `fingerprints` (the catalog's, structure.read_fingerprints) group the schemas
    cheaply; `structures` holds the first schema of each fingerprint (`representatives`)
    and decides: fingerprints whose schemas read the same are one group."""
    digests = {}
    for schemas in group_by_fingerprint(fingerprints).values():
        digest = structure_digest(structures[schemas[0]])
        digests.update(dict.fromkeys(schemas, digest))
    # each group's first schema is the first of one of its fingerprints: a representative
    groups = group_by_fingerprint(digests)
    if reference is None:
        reference_digest = next(iter(groups), None)
        reference = structures[groups[reference_digest][0]] if reference_digest else {}
    else:
        reference_digest = structure_digest(reference)
    alike = tuple(groups.pop(reference_digest, ())) if reference_digest else ()
    drifted = tuple(DriftGroup(tuple(schemas), digest,
                               differences(structures[schemas[0]], reference))
                    for digest, schemas in groups.items())
    return StructuralDriftReport(against, reference_digest, alike, drifted)


def representatives(fingerprints: Mapping[str, str]) -> list[str]:
    """One schema per fingerprint: the ones whose structure is worth reading."""
    return [schemas[0] for schemas in group_by_fingerprint(fingerprints).values()]


def check_against(against: str) -> str:
    if against not in REFERENCES:
        raise ConfigurationError(
            f"unknown reference {against!r}: use 'majority' or 'migrations'")
    return against

