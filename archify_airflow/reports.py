"""What the operators put in XCom, and how shard reports add up. Pure: no Airflow, no I/O.

A task's XCom must stay small whatever the fleet size, so a rollout report is
compacted: counts, the names of migrated schemas, every failure in full, and
per-migration timings aggregated over schemas instead of listed per schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from archify_core import FleetStatus, Outcome, RolloutReport, SchemaResult

MAX_NAMED_FAILURES = 20


def compact_report(report: RolloutReport) -> dict[str, Any]:
    """The XCom form of one rollout (one operator run)."""
    return {
        "target": report.target,
        "ok": report.ok,
        "dry_run": report.dry_run,
        "stopped_early": report.stopped_early,
        "duration_s": round(report.duration_s, 3),
        "summary": report.summary(),
        "migrated": sorted(r.schema for r in report.schemas if r.outcome is Outcome.MIGRATED),
        "planned": {r.schema: list(r.pending) for r in report.schemas
                    if r.outcome is Outcome.PLANNED and r.pending},
        "failed": {r.schema: _failure(r.failure) for r in sorted(report.failed, key=_schema)},
        "skipped": sorted(r.schema for r in report.schemas if r.outcome is Outcome.SKIPPED),
        "timings": _timings(report),
    }


def _schema(result: SchemaResult) -> str:
    return result.schema


def _failure(failure: Any) -> dict[str, Any]:
    if failure is None:
        return {"message": "failed", "version": None, "sqlstate": None, "attempts": 0}
    return {"message": failure.message, "version": failure.version,
            "sqlstate": failure.sqlstate, "attempts": failure.attempts}


def _timings(report: RolloutReport) -> dict[str, dict[str, float]]:
    timings: dict[str, dict[str, float]] = {}
    for result in report.schemas:
        for applied in result.applied:
            _add_timing(timings, applied.version, 1, applied.duration_ms, applied.duration_ms)
    return timings


def _add_timing(
    timings: dict[str, dict[str, float]], version: str, schemas: int, total: float, most: float
) -> None:
    entry = timings.setdefault(version, {"schemas": 0, "total_ms": 0.0, "max_ms": 0.0})
    entry["schemas"] += schemas
    entry["total_ms"] = round(entry["total_ms"] + total, 3)
    entry["max_ms"] = round(max(entry["max_ms"], most), 3)


def merge_reports(reports: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """One summary of many compact reports (the canary and every shard).

    A missing report (None: a task that never ran) counts in `missing_reports`.
    """
    merged: dict[str, Any] = {
        "ok": True, "reports": 0, "missing_reports": 0, "schemas": 0, "applied": 0,
        "outcomes": {o.value: 0 for o in Outcome}, "migrated": [], "failed": {},
        "skipped": [], "timings": {}, "duration_s": 0.0,
    }
    for report in reports:
        if report is None:
            merged["missing_reports"] += 1
            continue
        _merge_one(merged, report)
    for entry in merged["timings"].values():
        entry["mean_ms"] = round(entry["total_ms"] / entry["schemas"], 3) if entry["schemas"] else 0
    merged["ok"] = not merged["failed"] and not merged["missing_reports"]
    return merged


def _merge_one(merged: dict[str, Any], report: dict[str, Any]) -> None:
    merged["reports"] += 1
    summary = report.get("summary", {})
    merged["schemas"] += summary.get("schemas", 0)
    merged["applied"] += summary.get("applied", 0)
    for outcome in merged["outcomes"]:
        merged["outcomes"][outcome] += summary.get(outcome, 0)
    merged["migrated"].extend(report.get("migrated", []))
    merged["failed"].update(report.get("failed", {}))
    merged["skipped"].extend(report.get("skipped", []))
    merged["duration_s"] = round(merged["duration_s"] + report.get("duration_s", 0.0), 3)
    for version, t in report.get("timings", {}).items():
        _add_timing(merged["timings"], version, t["schemas"], t["total_ms"], t["max_ms"])


def describe_failures(failed: dict[str, dict[str, Any]]) -> str:
    """'N schemas failed: a (version: message), ...' naming at most MAX_NAMED_FAILURES."""
    names = [
        f"{schema} ({info.get('version') or 'before any migration'}: {info.get('message')})"
        for schema, info in sorted(failed.items())
    ]
    shown = "; ".join(names[:MAX_NAMED_FAILURES])
    more = len(names) - MAX_NAMED_FAILURES
    tail = f"; and {more} more" if more > 0 else ""
    return f"{len(names)} schema(s) failed: {shown}{tail}"


def compact_status(status: FleetStatus) -> dict[str, Any]:
    """The XCom form of a fleet status: counts per migration, not a row per tenant."""
    by_version: dict[str, int] = {}
    for tenant in status.tenants:
        for version in tenant.pending:
            by_version[version] = by_version.get(version, 0) + 1
    problems = {t.schema: t.problem for t in [status.public, *status.tenants] if t.problem}
    return {
        "pending_count": status.pending_count,
        "public_pending": list(status.public.pending),
        "tenants": len(status.tenants),
        "tenants_pending": sum(1 for t in status.tenants if t.pending),
        "tenant_pending_by_version": by_version,
        "registry_exists": status.registry_exists,
        "problems": problems,
    }
