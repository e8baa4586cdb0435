"""Human output in the guide's format: the status table, the migrate log, the summary. Pure.

Where the guide defines the output (the status table, a schema's applied migrations)
it is kept as the guide prints it; what the guide does not have (counts, failures
grouped by cause, reverted migrations) reads as plain English, plurals included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..report import Outcome, RolloutReport, SchemaResult
from ..status import FleetStatus, SchemaStatus

if TYPE_CHECKING:
    from ..fleet import FleetReport, FleetWideStatus

RULE = "=" * 60
TITLES = {
    "public": "🔄 Migrating public schema...",
    "tenants": "🔄 Migrating all tenant schemas...",
    "all": "🔄 Migrating public and all tenant schemas...",
}
DONE = {"public": "Public migration", "tenants": "Tenant migration", "all": "Migration"}
NAMED = 20  # schemas named in the summary's list of failed schemas
NAMED_PER_CAUSE = 5  # schemas named under each cause
SCHEMA = "<schema>"  # stands for the schema's name in a cause shared by many schemas


def plural(count: int, word: str, words: str | None = None) -> str:
    """'1 schema', '2,000 schemas'."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def status_lines(status: FleetStatus) -> list[str]:
    lines = [RULE, "MIGRATION STATUS", RULE, "", "📊 Public Schema:"]
    lines += _counts(status.public, "  ")
    if status.public.applied:
        lines += ["", "  Applied migrations:"]
        lines += [f"    ✓ {v}" for v in status.public.applied]
    lines += _pending(status.public)
    lines += _drift(status.public, "  ")
    if not status.registry_exists:
        lines += ["", "🏢 Tenant Schemas: none yet "
                  "(public.tenants does not exist: run `archify public`)"]
    else:
        lines += ["", f"🏢 Tenant Schemas: {len(status.tenants)}"]
    for tenant in status.tenants:
        lines += ["", f"  {tenant.slug} ({tenant.schema}):"]
        lines += _counts(tenant, "    ")
        lines += _pending(tenant)
        lines += _drift(tenant, "    ")
    lines.append(RULE)
    return lines


def _counts(schema: SchemaStatus, indent: str) -> list[str]:
    return [f"{indent}Applied: {len(schema.applied)}", f"{indent}Pending: {len(schema.pending)}"]


def _pending(schema: SchemaStatus) -> list[str]:
    unfinished = set(schema.unfinished)
    return [f"      ⏳ {v}" + (" (unfinished: not written yet, will not be applied)"
                               if v in unfinished else "")
            for v in schema.pending]


def _drift(schema: SchemaStatus, indent: str) -> list[str]:
    lines = [f"{indent}⚠ {schema.problem}"] if schema.problem else []
    drift = schema.drift
    lines += [f"{indent}⚠ drift: {v} was edited after it was applied" for v in drift.edited]
    lines += [f"{indent}⚠ drift: {v} is applied but has no file" for v in drift.missing_files]
    return lines


def rollout_title(target: str, dry_run: bool) -> str:
    title = TITLES.get(target, f"🔄 Migrating tenants {target}...")
    return title.replace("Migrating", "Planning (dry run)") if dry_run else title


def schema_lines(result: SchemaResult, sql: dict[str, str] | None = None, *,
                 reverting: bool = False) -> list[str]:
    """The lines one schema contributes to the migrate log (none when it was up to date
    or never started). A dry run's planned schema also shows the SQL of each step when
    `sql` is given; a rollback says what it reverted."""
    if result.outcome in (Outcome.UP_TO_DATE, Outcome.SKIPPED):
        return []
    where = f" ({result.database})" if result.database else ""
    lines = ["", f"  {result.schema}{where}:"]
    if reverting:
        lines += [f"    ↩ reverted {m.version} ({m.duration_ms:.0f} ms)" for m in result.applied]
    else:
        lines += [f"    ✓ {m.version} ({m.duration_ms:.0f} ms)" for m in result.applied]
    if result.outcome is Outcome.PLANNED:
        for version in result.pending:
            lines.append(f"    → {version}")
            if sql is not None:
                lines += [f"        {line}" for line in sql[version].strip().splitlines()]
    if result.failure is not None:
        where = f"{result.failure.version}: " if result.failure.version else ""
        lines.append(f"    ✗ {where}{result.failure.message}")
    if result.outcome is Outcome.PLANNED and reverting:
        lines = [line.replace("    → ", "    ↩ would revert ", 1) for line in lines]
    return lines


@dataclass(frozen=True, slots=True)
class Cause:
    """Schemas that failed the same way: the same migration, the same message once the
    schema's own name is taken out of it."""

    version: str | None
    message: str
    schemas: tuple[str, ...]

    def line(self) -> str:
        where = self.version or "before any migration"
        return f"   ✗ {len(self.schemas):,} × {where}: {self.message}"

    def names(self) -> str:
        return "     " + _some(self.schemas, NAMED_PER_CAUSE)


def causes(failed: Iterable[SchemaResult]) -> list[Cause]:
    """The failures grouped by cause, the most common first (then by migration), each
    group's schemas sorted."""
    groups: dict[tuple[str | None, str], list[str]] = {}
    for result in failed:
        failure = result.failure
        if failure is None:
            continue
        key = (failure.version, failure.message.replace(result.schema, SCHEMA))
        groups.setdefault(key, []).append(result.schema)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0][0] or "", kv[0][1]))
    return [Cause(version, message, tuple(sorted(schemas)))
            for (version, message), schemas in ordered]


def _some(names: Sequence[str], shown: int) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more:,} more" if more > 0 else "")


def counts_line(report: RolloutReport) -> str:
    s = report.summary()
    reverting = report.target.startswith("rollback")
    changed = s["migrated"] + s["rolled_back"]
    return (f"{plural(s['schemas'], 'schema')}: {changed:,} "
            f"{'rolled back' if reverting else 'migrated'}, {s['up_to_date']:,} up to date, "
            f"{s['failed']:,} failed, {s['skipped']:,} skipped; "
            f"{plural(s['applied'], 'migration')} {'reverted' if reverting else 'applied'} "
            f"in {report.duration_s:.2f} s")


def closing_lines(report: RolloutReport) -> list[str]:
    """The summary after the log: one line when all went well; else the failed schemas
    (sorted), their causes, each printed once with its count and first schemas, and
    the skipped ones."""
    s = report.summary()
    counts = counts_line(report)
    if report.dry_run:
        return ["", f"📝 Dry run: {plural(s['planned'], 'schema')} would change; "
                    "nothing was applied"]
    if report.ok and report.target.startswith("rollback"):
        return ["", f"✅ Rollback complete ({counts})"]
    if report.ok and s["applied"] == 0 and not s["skipped"]:
        return ["", f"✅ Everything is up to date ({plural(s['schemas'], 'schema')} checked "
                    f"in {report.duration_s:.2f} s)"]
    skipped = _skipped_lines(report)
    if report.ok:
        done = DONE.get(report.target, "Migration")
        return ["", f"✅ {done} complete ({counts})", *skipped]
    failed = sorted(r.schema for r in report.failed)
    lines = ["", f"❌ {plural(len(failed), 'schema')} failed: {_some(failed, NAMED)}"]
    for cause in causes(report.failed):
        lines += [cause.line(), cause.names()]
    return [*lines, *skipped, f"   ({counts})",
            "   Fix the cause and re-run: only what is still pending will run."]


def fleet_status_lines(status: FleetWideStatus) -> list[str]:
    """The guide's status of each database, under its name, then the ones not reached."""
    lines: list[str] = []
    for name, one in status.databases.items():
        lines += [f"🗄  database {name}", *status_lines(one), ""]
    lines += [f"✗ database {name} could not be read: {why}"
              for name, why in status.unreachable.items()]
    total = sum(len(s.tenants) for s in status.databases.values())
    lines.append(f"🌐 {plural(len(status.databases) + len(status.unreachable), 'database')}, "
                 f"{plural(total, 'tenant')}, {status_pending(status)} pending")
    return lines


def status_pending(status: FleetWideStatus) -> str:
    return plural(sum(s.pending_count for s in status.databases.values()), "migration")


def fleet_closing_lines(report: FleetReport) -> list[str]:
    """Each database's summary under its name, the unreachable ones, one fleet line."""
    lines: list[str] = []
    for name, one in report.databases.items():
        own = closing_lines(one)  # a blank line, the summary line, then any details
        lines += ["", f"🗄  {name}: {own[1]}", *own[2:]]
    for name, why in report.unreachable.items():
        lines += ["", f"✗ database {name} was not reached: {why}; none of its schemas "
                      "were touched (a re-run migrates them)"]
    s = report.summary()
    changed = s.get("migrated", 0) + s.get("rolled_back", 0)
    mark = "✅" if report.ok else "❌"
    lines += ["", f"{mark} fleet: {plural(s['databases'], 'database')} "
                  f"({s['unreachable']:,} not reached), {plural(s.get('schemas', 0), 'schema')}: "
                  f"{changed:,} changed, {s.get('failed', 0):,} failed, "
                  f"{s.get('skipped', 0):,} skipped"]
    return lines


def _skipped_lines(report: RolloutReport) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for result in report.schemas:
        if result.outcome is Outcome.SKIPPED:
            by_reason.setdefault(result.skipped_because or "not started", []).append(
                result.schema)
    return [f"   - {plural(len(names), 'schema')} not started ({reason}): "
            f"{_some(sorted(names), NAMED_PER_CAUSE)}"
            for reason, names in by_reason.items()]
