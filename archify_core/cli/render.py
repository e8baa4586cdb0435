"""Human output in the guide's format: the status table and the migrate log."""

from __future__ import annotations

from ..report import Outcome, RolloutReport, SchemaResult
from ..status import FleetStatus, SchemaStatus

RULE = "=" * 60
TITLES = {
    "public": "🔄 Migrating public schema...",
    "tenants": "🔄 Migrating all tenant schemas...",
    "all": "🔄 Migrating public and all tenant schemas...",
}
DONE = {"public": "Public migration", "tenants": "Tenant migration", "all": "Migration"}


def status_lines(status: FleetStatus) -> list[str]:
    lines = [RULE, "MIGRATION STATUS", RULE, "", "📊 Public Schema:"]
    lines += _counts(status.public, "  ")
    if status.public.applied:
        lines += ["", "  Applied migrations:"]
        lines += [f"    ✓ {v}" for v in status.public.applied]
    lines += [f"      ⏳ {v}" for v in status.public.pending]
    lines += _drift(status.public, "  ")
    if not status.registry_exists:
        lines += ["", "🏢 Tenant Schemas: none yet "
                  "(public.tenants does not exist: run `archify public`)"]
    else:
        lines += ["", f"🏢 Tenant Schemas: {len(status.tenants)}"]
    for tenant in status.tenants:
        lines += ["", f"  {tenant.slug} ({tenant.schema}):"]
        lines += _counts(tenant, "    ")
        lines += [f"      ⏳ {v}" for v in tenant.pending]
        lines += _drift(tenant, "    ")
    lines.append(RULE)
    return lines


def _counts(schema: SchemaStatus, indent: str) -> list[str]:
    return [f"{indent}Applied: {len(schema.applied)}", f"{indent}Pending: {len(schema.pending)}"]


def _drift(schema: SchemaStatus, indent: str) -> list[str]:
    lines = [f"{indent}⚠ {schema.problem}"] if schema.problem else []
    drift = schema.drift
    lines += [f"{indent}⚠ drift: {v} was edited after it was applied" for v in drift.edited]
    lines += [f"{indent}⚠ drift: {v} is applied but has no file" for v in drift.missing_files]
    return lines


def rollout_title(target: str, dry_run: bool) -> str:
    title = TITLES.get(target, f"🔄 Migrating tenants {target}...")
    return title.replace("Migrating", "Planning (dry run)") if dry_run else title


def schema_lines(result: SchemaResult, sql: dict[str, str] | None = None) -> list[str]:
    """The lines one schema contributes to the migrate log (none when it was up to date).
    A dry run's planned schema also shows the SQL of each step when `sql` is given."""
    if result.outcome is Outcome.UP_TO_DATE:
        return []
    lines = ["", f"  {result.schema}:"]
    lines += [f"    ✓ {m.version} ({m.duration_ms:.0f} ms)" for m in result.applied]
    if result.outcome is Outcome.PLANNED:
        for version in result.pending:
            lines.append(f"    → {version}")
            if sql is not None:
                lines += [f"        {line}" for line in sql[version].strip().splitlines()]
    if result.outcome is Outcome.SKIPPED:
        lines += [f"    - skipped (--max-failures reached): {', '.join(result.pending)}"]
    if result.failure is not None:
        where = f"{result.failure.version}: " if result.failure.version else ""
        lines.append(f"    ✗ {where}{result.failure.message}")
    return lines


def closing_lines(report: RolloutReport) -> list[str]:
    s = report.summary()
    changed = s["migrated"] + s["rolled_back"]
    counts = (f"{s['schemas']} schemas: {changed} migrated, {s['up_to_date']} up to date, "
              f"{s['failed']} failed, {s['skipped']} skipped; {s['applied']} migrations applied "
              f"in {report.duration_s:.2f} s")
    if report.dry_run:
        return ["", f"📝 Dry run: {s['planned']} schemas would change; nothing was applied"]
    if report.ok and report.target.startswith("rollback"):
        return ["", f"✅ Rollback complete ({counts.replace('migrated', 'rolled back')})"]
    if report.ok and s["applied"] == 0 and not s["skipped"]:
        return ["", f"✅ Everything is up to date ({s['schemas']} schemas checked in "
                    f"{report.duration_s:.2f} s)"]
    if report.ok:
        done = DONE.get(report.target, "Migration")
        return ["", f"✅ {done} complete ({counts})"]
    failed = ", ".join(r.schema for r in report.failed[:20])
    more = f" and {len(report.failed) - 20} more" if len(report.failed) > 20 else ""
    return ["", f"❌ {len(report.failed)} schema(s) failed: {failed}{more}", f"   ({counts})",
            "   Fix the cause and re-run: only what is still pending will run."]

