"""The fleet benchmark: one rollout over several databases on several servers.

    python -m benchmarks.fleets [--servers 3] [--n 2000] [--repeats 3]

Starts `--servers` embedded PostgreSQL servers (one data folder each), builds the
everyday-deploy fleet (every tenant migration but the last applied, as archify leaves
it) of `--n` tenants in one database on each, then, interleaved in every repeat and
each from the same starting state:

- `archify … all` end to end over the fleet file naming the databases (the product);
- the raw-SQL floor over the same servers at once (the better of 2 or 8 connections
  per server, the new migration and its ledger row, one round trip per schema);
- the single-database command over each database, one after the other (what a team
  without fleets runs: `archify --dsn DB1 all; archify --dsn DB2 all; …`);

and `archify status --json` over the whole fleet. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import anyio

from archify_core.event_loop import run_async
from archify_core.migration import Scope

from . import server, tools
from .fleet import SCENARIOS, build_fleet, load, reset_fleet, tenant_schema
from .scenarios import FLOOR_CONNECTIONS
from .stats import median
from .verify import verify_fleet

SCENARIO = SCENARIOS["deploy"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _floor(dsns: list[str], schemas: list[str], pending: list, k: int) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for dsn in dsns:
            tg.start_soon(tools.floor, dsn, schemas, pending, k)
    return time.perf_counter() - started


async def _cli(argv: list[str]) -> tuple[float, float]:
    """`archify ARGV` end to end: seconds and peak RSS (MB)."""
    _, seconds, rss = await tools.run_child([sys.executable, "-m", "benchmarks.cli_rss", *argv])
    return seconds, rss


async def bench(admins: list[str], n: int, repeats: int, root: Path) -> dict[str, list[float]]:
    migrations = load(SCENARIO, root)
    mdir = SCENARIO.migrations_dir(root)
    dsns = []
    for i, admin in enumerate(admins):
        db = f"bench_fleets_{i}"
        await server.drop_database(admin, db)
        await server.admin(admin, f'CREATE DATABASE "{db}"')
        dsn = server.database_dsn(admin, db)
        started = time.perf_counter()
        await build_fleet(dsn, migrations, SCENARIO.before, n)
        log(f"built {db} ({n:,} tenants) in {time.perf_counter() - started:.1f} s")
        dsns.append(dsn)
    fleet_file = root / "archify.toml"
    fleet_file.write_text("".join(f'[databases.db{i}]\ndsn = "{dsn}"\n'
                                  for i, dsn in enumerate(dsns)))
    schemas = [tenant_schema(i) for i in range(n)]
    pending = [m for m in migrations.for_kind(Scope.TENANT) if m.version not in SCENARIO.before]
    times: dict[str, list[float]] = {}

    async def reset() -> None:
        async with anyio.create_task_group() as tg:
            for dsn in dsns:
                tg.start_soon(reset_fleet, dsn, migrations, SCENARIO.before, n)

    async def verify(digests: bool) -> None:
        for dsn in dsns:
            await verify_fleet(dsn, migrations, SCENARIO.after, schemas, digests=digests)

    peak: list[float] = []

    async def fleet_cli() -> float:
        seconds, rss = await _cli(["--fleet", str(fleet_file), "--migrations", str(mdir), "all"])
        peak.append(rss)
        return seconds

    async def one_after_another() -> float:
        total = 0.0
        for dsn in dsns:
            total += (await _cli(["--dsn", dsn, "--migrations", str(mdir), "all"]))[0]
        return total

    runs = {"archify fleet (CLI)": (fleet_cli, True),
            "single-database CLI, one database after another": (one_after_another, True)}
    for k in FLOOR_CONNECTIONS:
        async def fl(k: int = k) -> float:
            return await _floor(dsns, schemas, pending, k)
        runs[f"floor-{k}"] = (fl, False)
    await fleet_cli()  # warm-up, untimed
    await reset()
    for r in range(repeats):
        for name, (run, digests) in runs.items():
            seconds = await run()
            await verify(digests)
            await reset()
            times.setdefault(name, []).append(seconds)
            log(f"  repeat {r + 1}: {name} {seconds:.3f} s")
    for _ in range(repeats):
        seconds, rss = await _cli(["--fleet", str(fleet_file), "--migrations", str(mdir),
                                   "status", "--json"])
        times.setdefault("status (CLI)", []).append(seconds)
        peak.append(rss)
    for i, admin in enumerate(admins):
        await server.drop_database(admin, f"bench_fleets_{i}")
    times["peak RSS of the fleet CLI (MB)"] = [max(peak)]
    return times


def render(times: dict[str, list[float]], servers: int, n: int, repeats: int) -> str:
    floor = min(median(v) for k, v in times.items() if k.startswith("floor-"))
    fleet = median(times["archify fleet (CLI)"])
    serial = median(times["single-database CLI, one database after another"])
    lines = [f"{servers} servers × {n:,} tenants, everyday deploy, {repeats} repeats, medians",
             "", "| run | median (s) |", "| --- | ---: |"]
    lines += [f"| {name} | {median(v):.3f} |" for name, v in times.items() if "RSS" not in name]
    rss = times["peak RSS of the fleet CLI (MB)"][0]
    lines += [f"| peak RSS of the fleet CLI | {rss:.0f} MB |"]
    lines += ["", "| target | measured | |", "| --- | ---: | --- |",
              f"| fleet CLI ≤ 1.2× the floor over the same servers | {fleet / floor:.2f}× | "
              f"{'met' if fleet / floor <= 1.2 else 'NOT met'} |",
              f"| ≥ 2.5× faster than one database after another | {serial / fleet:.2f}× | "
              f"{'met' if serial / fleet >= 2.5 else 'NOT met'} |",
              f"| status over {servers * n:,} tenants ≤ 0.6 s | "
              f"{median(times['status (CLI)']):.3f} s | "
              f"{'met' if median(times['status (CLI)']) <= 0.6 else 'NOT met'} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fleets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--n", type=int, default=2000, help="tenants per database")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        admins = [stack.enter_context(server.server(None)) for _ in range(args.servers)]
        times = run_async(bench, admins, args.n, args.repeats, Path(tmp))
    print(render(times, args.servers, args.n, args.repeats))


if __name__ == "__main__":
    main()
