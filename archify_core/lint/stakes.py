"""What the fleet stakes on a finding: the size and row estimate of its table in every
tenant schema (and public), read in one catalog query."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import asyncpg

from ..ledger import Queryable
from ..migration import Migration
from .findings import LintReport
from .rules import Rule

# One query for every table of every finding: public and each registered tenant schema.
STAKES_QUERY = """
SELECT n.nspname AS schema, c.relname AS "table", pg_total_relation_size(c.oid) AS bytes,
       c.reltuples::bigint AS rows
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND c.relname = ANY($1::text[])
  AND (n.nspname = 'public' OR n.nspname IN (SELECT schema_name FROM public.tenants))
"""
PUBLIC_ONLY = STAKES_QUERY.replace(
    " OR n.nspname IN (SELECT schema_name FROM public.tenants)", "")


@dataclass(frozen=True, slots=True)
class TableSize:
    schema: str
    table: str
    bytes: int
    rows: int  # PostgreSQL's estimate; -1 when the table was never analyzed


async def read_stakes(conn: Queryable, tables: Iterable[str]) -> list[TableSize]:
    """The size of each of `tables` in public and every tenant schema: one query (two
    when there is no registry yet: public's tables alone)."""
    names = sorted(set(tables))
    if not names:
        return []
    try:
        rows = await conn.fetch(STAKES_QUERY, names)
    except asyncpg.UndefinedTableError:  # no public.tenants yet
        rows = await conn.fetch(PUBLIC_ONLY, names)
    return [TableSize(r["schema"], r["table"], r["bytes"], r["rows"]) for r in rows]


def with_stakes(report: LintReport, sizes: Sequence[TableSize],
                migrations: Iterable[Migration], rules: Iterable[Rule]) -> LintReport:
    """`report` with each finding on a table told what the fleet stakes on it."""
    verbs = {rule.id: rule.stakes for rule in rules}
    scopes = {m.version: m.scope for m in migrations}
    findings = []
    for finding in report.findings:
        verb, scope = verbs.get(finding.rule), scopes.get(finding.version)
        if verb and finding.table and scope is not None:
            tenants = [s for s in sizes if s.table == finding.table and s.schema != "public"]
            public = [s for s in sizes if s.table == finding.table and s.schema == "public"]
            parts = []
            if scope.applies_to_tenants():
                parts.append(_fleet_words(verb, finding.table, tenants))
            if scope.applies_to_public() and public:
                parts.append(f"{verb} public.{finding.table}, {_size(public[0].bytes)}"
                             f"{_rows(public[0].rows)}")
            finding = replace(finding, stakes="; ".join(parts) or None)
        findings.append(finding)
    return LintReport(findings, list(report.notes))


def _fleet_words(verb: str, table: str, sizes: Sequence[TableSize]) -> str:
    if not sizes:
        return f"{table} is in no tenant yet"
    largest = max(sizes, key=lambda s: s.bytes)
    rows = sum(max(s.rows, 0) for s in sizes)
    count = len(sizes)
    return (f"{verb} {table} in {count:,} tenant{'s' if count != 1 else ''}, "
            f"{_size(sum(s.bytes for s in sizes))} in all{_rows(rows)}, the largest "
            f"{_size(largest.bytes)} in {largest.schema}")


def _rows(rows: int) -> str:
    return f" (~{rows:,} rows)" if rows > 0 else ""


def _size(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TB"  # (unreachable: GB is the last unit)
