"""Running one scenario at one N: every tool, interleaved, repeated, verified.

Each timed run of a migrating tool starts from its own copy of the prepared
fleet, and its result is verified before its time is recorded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archify_core.engine import AUTO_CONCURRENCY
from archify_core.migration import MigrationSet, Scope
from archify_core.sql import quote_literal

from . import server, tools
from .fleet import Scenario, reset_fleet, tenant_build_sql, tenant_schema
from .stats import median, percentile
from .verify import verify_fleet

FLOOR_CONNECTIONS = (2, 8)  # the floor issue 5 defines: the better of the two
# Also measured, not part of "floor": the floor over as many connections as archify's
# default uses, which the server rewards too (docs/performance.md, "Concurrency").
WIDE_FLOOR = f"floor-{AUTO_CONCURRENCY}"
CREATE_COUNT = 20  # tenants created per tool per repeat in create-tenant


@dataclass
class Context:
    admin_dsn: str
    tool_dsn: Callable[[str], str]  # database name -> DSN the tools use (maybe via the proxy)
    root: Path
    repeats: int
    concurrencies: tuple[int | None, ...]  # archify settings; None: its default
    log: Callable[[str], None]


@dataclass
class Result:
    scenario: str
    n: int
    times: dict[str, list[float]] = field(default_factory=dict)  # tool -> seconds per repeat
    rss_mb: dict[str, float] = field(default_factory=dict)  # tool -> peak RSS
    samples: dict[str, list[float]] = field(default_factory=dict)  # create-tenant latencies

    def add(self, tool: str, measured: tools.Measured) -> None:
        self.times.setdefault(tool, []).append(measured.seconds)
        if measured.rss_mb is not None:
            self.rss_mb[tool] = max(self.rss_mb.get(tool, 0.0), measured.rss_mb)
        self.samples.setdefault(tool, []).extend(measured.samples)

    def median(self, tool: str) -> float:
        return median(self.times.get(tool, []))

    def floor(self) -> float:
        floors = [self.median(f"floor-{c}") for c in FLOOR_CONNECTIONS
                  if f"floor-{c}" in self.times]
        return min(floors) if floors else float("nan")

    def p(self, tool: str, q: float) -> float:
        return percentile(self.samples.get(tool, []), q)


def archify_tool(c: int | None) -> str:
    return "archify" if c is None else f"archify-c{c}"


Run = Callable[[str], Coroutine[Any, Any, tools.Measured]]


async def _timed_runs(ctx: Context, scenario: Scenario, n: int, db: str,
                      migrations: MigrationSet, runs: dict[str, Run], result: Result,
                      changes: bool, warm_up: bool = True) -> None:
    """Each repeat runs every tool once, verifies the fleet before keeping the time and, if
    the tool changed the fleet, puts it back (untimed). The order is a seeded shuffle of the
    tools rotated by one per repeat: over len(tools) repeats each tool runs once in every
    position. A fleet never reset is faster for whichever tool runs on it first (rollout
    at N=10,000: 3.4 s against 4.5-4.7 s; bootstrap at 1,000: 3.4 s against 5.8-7.8 s):
    with `warm_up`, one untimed run and its reset come first, so every timed run follows
    a reset."""
    schemas = [tenant_schema(i) for i in range(n)]
    names = list(runs)
    random.Random(f"{scenario.name}:{n}").shuffle(names)
    admin_db = server.database_dsn(ctx.admin_dsn, db)
    if changes and warm_up:
        tool = next((name for name in names if name.startswith("floor-")), names[0])
        measured = await runs[tool](ctx.tool_dsn(db))
        await reset_fleet(admin_db, migrations, scenario.before, n)
        ctx.log(f"  {scenario.name} N={n} warm-up (untimed): {tool} {measured.seconds:.3f} s")
    for r in range(ctx.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for tool in order:
            measured = await runs[tool](ctx.tool_dsn(db))
            started = time.perf_counter()
            await verify_fleet(admin_db, migrations, scenario.after, schemas,
                               digests=tool.startswith("archify") or tool == "cli")
            verified = time.perf_counter()
            result.add(tool, measured)
            if changes:
                await reset_fleet(admin_db, migrations, scenario.before, n)
            ctx.log(f"  {scenario.name} N={n} repeat {r + 1}: {tool} {measured.seconds:.3f} s"
                    + (f", {measured.rss_mb:.0f} MB" if measured.rss_mb else "")
                    + f" (verify {verified - started:.1f} s, reset "
                    f"{time.perf_counter() - verified:.1f} s)")


async def run_migrating(ctx: Context, scenario: Scenario, n: int, db: str,
                        migrations: MigrationSet, cli: bool) -> Result:
    """rollout, bootstrap, noop: archify, sequential and (where there is work) the floor."""
    mdir = scenario.migrations_dir(ctx.root)
    pending = [m for m in migrations.for_kind(Scope.TENANT) if m.version not in scenario.before]
    schemas = [tenant_schema(i) for i in range(n)]
    runs: dict[str, Run] = {}
    for c in ctx.concurrencies:
        async def api(dsn: str, c: int | None = c) -> tools.Measured:
            return await tools.archify_api(dsn, mdir, "migrate", concurrency=c)
        runs[archify_tool(c)] = api

    async def seq(dsn: str) -> tools.Measured:
        return await tools.sequential(dsn, migrations)
    runs["sequential"] = seq
    if pending:
        for k in (*FLOOR_CONNECTIONS, AUTO_CONCURRENCY):
            async def fl(dsn: str, k: int = k) -> tools.Measured:
                return await tools.floor(dsn, schemas, pending, k)
            runs[f"floor-{k}"] = fl
    result = Result(scenario.name, n)
    await _timed_runs(ctx, scenario, n, db, migrations, runs, result, bool(pending))
    if cli:
        # the deploy is what users type, with the defaults: `archify … all`, its log and
        # summary on a pipe; the others quietly. As many repeats as the API where a run
        # leaves nothing to reset (the deploy's reset is the API's, noop has none; one
        # cold run alone was 0.2 s off the median); once where each costs a fleet reset
        deploy = scenario.name == "deploy"
        command = ["all"] if deploy else ["tenants", "--quiet"]

        async def end_to_end(dsn: str) -> tools.Measured:
            return await tools.archify_cli(dsn, mdir, command)
        saved, ctx.repeats = ctx.repeats, (ctx.repeats if deploy or not pending else 1)
        await _timed_runs(ctx, scenario, n, db, migrations, {"cli": end_to_end}, result,
                          bool(pending), warm_up=False)
        ctx.repeats = saved
    return result


async def run_start_up(ctx: Context) -> Result:
    """`archify --help` and `archify --version`: what the front end costs before any work
    (interpreter start, imports), no database."""
    result = Result("start-up", 0)
    for _ in range(max(ctx.repeats, 5)):
        for tool, args in (("help", ["--help"]), ("version", ["--version"])):
            result.add(tool, await tools.archify_cli(None, None, args))
    ctx.log(f"  start-up: --help {result.median('help'):.3f} s, "
            f"--version {result.median('version'):.3f} s")
    return result


async def run_status(ctx: Context, scenario: Scenario, n: int, db: str,
                     migrations: MigrationSet, cli: bool) -> Result:
    """The fleet status: archify's API and CLI, and the sequential per-schema ledger reads."""
    mdir = scenario.migrations_dir(ctx.root)

    async def api(dsn: str) -> tools.Measured:
        return await tools.archify_api(dsn, mdir, "status", count=n)  # every tenant, none pending

    async def seq(dsn: str) -> tools.Measured:
        return await tools.sequential(dsn, migrations)  # nothing pending: reads every ledger

    runs: dict[str, Run] = {"archify": api, "sequential": seq}
    if cli:
        async def end_to_end(dsn: str) -> tools.Measured:
            return await tools.archify_cli(dsn, mdir, ["status", "--json"])
        runs["cli"] = end_to_end
    result = Result(scenario.name, n)
    await _timed_runs(ctx, scenario, n, db, migrations, runs, result, False)
    return result


async def run_drift(ctx: Context, scenario: Scenario, n: int, db: str,
                    migrations: MigrationSet) -> Result:
    """`archify drift --json` end to end over a fleet of alike tenants (exit 0): every
    tenant's structure fingerprinted and grouped. No baseline does this."""
    mdir = scenario.migrations_dir(ctx.root)

    async def end_to_end(dsn: str) -> tools.Measured:
        return await tools.archify_cli(dsn, mdir, ["drift", "--json"])
    result = Result(scenario.name, n)
    await _timed_runs(ctx, scenario, n, db, migrations, {"cli": end_to_end}, result, False)
    return result


async def run_create_tenant(ctx: Context, scenario: Scenario, fleets: dict[int, str],
                            migrations: MigrationSet) -> list[Result]:
    """p50/p95 of creating one tenant while n exist, for every n at once (`fleets`: n ->
    database): archify vs the same DDL by hand. Each repeat visits every fleet, the order
    rotating, and on each fleet which of the two goes first alternates: the machine's
    drift over the run falls on every n and both tools alike, so the growth from one n to
    the next is measured, not the minutes between them."""
    mdir = scenario.migrations_dir(ctx.root)
    tenant = list(migrations.for_kind(Scope.TENANT))
    results = {n: Result(scenario.name, n) for n in fleets}
    created: dict[int, list[str]] = {n: [] for n in fleets}
    sizes = list(fleets)
    for r in range(ctx.repeats):
        for n in sizes[r % len(sizes):] + sizes[:r % len(sizes)]:
            dsn, result = ctx.tool_dsn(fleets[n]), results[n]
            slugs = {tool: [f"bench_{tool[0]}{r}_{i:04d}" for i in range(CREATE_COUNT)]
                     for tool in ("archify", "hand")}
            scripts = [(slug, f"BEGIN;\n{tenant_build_sql(f'tenant_{slug}', tenant)}"
                              "INSERT INTO public.tenants (slug, name, schema_name) VALUES "
                              f"({quote_literal(slug)}, {quote_literal(slug)}, "
                              f"{quote_literal('tenant_' + slug)});\nCOMMIT;")
                       for slug in slugs["hand"]]
            for tool in (("archify", "hand") if r % 2 == 0 else ("hand", "archify")):
                if tool == "archify":
                    result.add("archify", await tools.archify_api(
                        dsn, mdir, "create", count=CREATE_COUNT, prefix=f"bench_a{r}_"))
                else:
                    result.add("by-hand", await tools.create_by_hand(dsn, scripts))
                created[n].extend(f"tenant_{slug}" for slug in slugs[tool])
            ctx.log(f"  create-tenant N={n} repeat {r + 1}: archify p50 "
                    f"{result.p('archify', 50) * 1000:.1f} ms, by hand "
                    f"{result.p('by-hand', 50) * 1000:.1f} ms")
    for n, db in fleets.items():
        started = time.perf_counter()
        admin_db = server.database_dsn(ctx.admin_dsn, db)
        await verify_fleet(admin_db, migrations, scenario.after,
                           [tenant_schema(i) for i in range(n)] + created[n], digests=True)
        ctx.log(f"  verified {n + len(created[n])} schemas in "
                f"{time.perf_counter() - started:.1f} s")
        await reset_fleet(admin_db, migrations, scenario.before, n)
    return [results[n] for n in fleets]
