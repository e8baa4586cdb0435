"""What the operators put in XCom, and how shard reports add up. Pure: no Airflow, no I/O.

A task's XCom must stay small whatever the fleet size. One task's report (one shard,
so bounded by the shard size) has counts, the names of its migrated schemas, its
failures in full, and per-migration timings aggregated over schemas. The merged
summary of a whole fleet keeps counts and timings, but at most MAX_NAMED_FAILURES
names per list (`migrated`, `skipped`, `failed` with messages) plus, in `left_out`,
how many names each list left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from archify_core import FleetStatus, Outcome, RolloutReport, SchemaResult
from archify_core.fleet import FleetReport

MAX_NAMED_FAILURES = 20  # names per list in a merged summary, and in a failure message


def compact_report(report: RolloutReport, database: str | None = None) -> dict[str, Any]:
    """The XCom form of one rollout (one operator run) in one database (its connection
    id, when the task knows it)."""
    named = {"database": database} if database else {}
    return {
        **named,
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


def compact_fleet_report(report: FleetReport) -> dict[str, Any]:
    """The XCom form of one rollout over several databases: each database's compact
    report under `reports`, and the databases that could not be reached, with why."""
    reports = [compact_report(r, name) for name, r in report.databases.items()]
    return {
        "target": report.target, "ok": report.ok, "dry_run": report.dry_run,
        "duration_s": max((r["duration_s"] for r in reports), default=0.0),
        "summary": report.summary(), "reports": reports,
        "unreachable": dict(report.unreachable),
    }


def _schema(result: SchemaResult) -> str:
    return result.schema


def _failure(failure: Any) -> dict[str, Any]:
    """A failed result's Failure (the library always sets one on a failed result)."""
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
    """One summary of many compact reports (public, the canary and every shard); a
    report over several databases (`compact_fleet_report`) counts as each of its own.

    A missing report (None: a task that never ran) counts in `missing_reports`, a
    database that could not be reached in `unreachable`. When the reports span more
    than one database, every schema is named `database/schema` (each database has a
    `public`), and `databases` has per-database counts.
    `migrated`, `skipped` and `failed` keep the first MAX_NAMED_FAILURES names each (the
    counts are in `outcomes`); `left_out` says how many names each one left out.
    `task_seconds` adds up every task's own duration: shards run in parallel, so it is
    worker time, not the run's wall-clock time.
    """
    merged: dict[str, Any] = {
        "ok": True, "reports": 0, "missing_reports": 0, "schemas": 0, "applied": 0,
        "outcomes": {o.value: 0 for o in Outcome}, "migrated": [], "failed": {},
        "skipped": [], "left_out": {"migrated": 0, "failed": 0, "skipped": 0},
        "timings": {}, "task_seconds": 0.0, "databases": {}, "unreachable": {},
    }
    flat: list[dict[str, Any]] = []
    for report in reports:
        if report is None:
            merged["missing_reports"] += 1
        elif "reports" in report:  # several databases in one task
            flat += report["reports"]
            merged["unreachable"].update(report.get("unreachable", {}))
        else:
            flat.append(report)
    databases = {r.get("database") for r in flat} | set(merged["unreachable"])
    qualify = len(databases - {None}) > 1
    for report in flat:
        _merge_one(merged, report, f"{report.get('database')}/" if qualify else "")
    for entry in merged["timings"].values():
        entry["mean_ms"] = round(entry["total_ms"] / entry["schemas"], 3) if entry["schemas"] else 0
    merged["ok"] = (not merged["failed"] and not merged["left_out"]["failed"]
                    and not merged["missing_reports"] and not merged["unreachable"])
    return merged


def _keep_first(merged: dict[str, Any], key: str, names: Iterable[str], prefix: str) -> None:
    """Append names to merged[key] up to MAX_NAMED_FAILURES; count the rest in left_out."""
    kept = merged[key]
    for name in names:
        if len(kept) < MAX_NAMED_FAILURES:
            kept.append(prefix + name)
        else:
            merged["left_out"][key] += 1


def _merge_one(merged: dict[str, Any], report: dict[str, Any], prefix: str) -> None:
    merged["reports"] += 1
    summary = report.get("summary", {})
    merged["schemas"] += summary.get("schemas", 0)
    merged["applied"] += summary.get("applied", 0)
    for outcome in merged["outcomes"]:
        merged["outcomes"][outcome] += summary.get(outcome, 0)
    if report.get("database"):
        counts = merged["databases"].setdefault(
            report["database"], {"schemas": 0, "applied": 0, "failed": 0})
        for key in counts:
            counts[key] += summary.get(key, 0)
    _keep_first(merged, "migrated", report.get("migrated", []), prefix)
    _keep_first(merged, "skipped", report.get("skipped", []), prefix)
    for schema, failure in report.get("failed", {}).items():
        if len(merged["failed"]) < MAX_NAMED_FAILURES:
            merged["failed"][prefix + schema] = failure
        else:
            merged["left_out"]["failed"] += 1
    merged["task_seconds"] = round(merged["task_seconds"] + report.get("duration_s", 0.0), 3)
    for version, t in report.get("timings", {}).items():
        _add_timing(merged["timings"], version, t["schemas"], t["total_ms"], t["max_ms"])


def describe_failures(failed: dict[str, dict[str, Any]], left_out: int = 0) -> str:
    """'N schemas failed: a (version: message), ...' naming at most MAX_NAMED_FAILURES.

    `left_out`: failures not in `failed` (a merged summary's `left_out["failed"]`).
    """
    names = [
        f"{schema} ({info.get('version') or 'before any migration'}: {info.get('message')})"
        for schema, info in sorted(failed.items())
    ]
    shown = "; ".join(names[:MAX_NAMED_FAILURES])
    more = len(names) - MAX_NAMED_FAILURES + left_out
    tail = f"; and {more} more" if more > 0 else ""
    return f"{len(names) + left_out} schema(s) failed: {shown}{tail}"


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


def compact_statuses(statuses: dict[str, FleetStatus]) -> dict[str, Any]:
    """The XCom form of the status of several databases: the counts added up, and each
    database's own `compact_status` under `databases`. Problems are named
    `database/schema` when there is more than one database."""
    each = {name: compact_status(status) for name, status in statuses.items()}
    qualify = len(each) > 1
    by_version: dict[str, int] = {}
    for one in each.values():
        for version, count in one["tenant_pending_by_version"].items():
            by_version[version] = by_version.get(version, 0) + count
    return {
        "pending_count": sum(s["pending_count"] for s in each.values()),
        "public_pending": sorted({v for s in each.values() for v in s["public_pending"]}),
        "tenants": sum(s["tenants"] for s in each.values()),
        "tenants_pending": sum(s["tenants_pending"] for s in each.values()),
        "tenant_pending_by_version": by_version,
        "registry_exists": all(s["registry_exists"] for s in each.values()),
        "problems": {(f"{name}/{schema}" if qualify else schema): problem
                     for name, s in each.items() for schema, problem in s["problems"].items()},
        "databases": each,
    }
