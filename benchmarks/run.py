"""The fleet-scale benchmark's one command.

    python -m benchmarks.run [--n 1000 10000] [--repeats 3] [--scenarios ...]
                             [--dsn DSN | --data-dir DIR] [--latency-ms 1]
                             [--concurrency 8 16 ...] [--write-docs [--docs-section NAME]]

Starts its own embedded PostgreSQL unless --dsn is given (the DSN's user must be
allowed to create databases), builds each prepared fleet once per N as its own
database, runs create-tenant on the fleets of every N at once (their runs interleaved),
then every other scenario (putting the fleet back after each run); see
docs/performance.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from archify_core.event_loop import run_async

from . import report, server
from .fleet import SCENARIOS, build_fleet, load
from .scenarios import (
    Context,
    Result,
    run_create_tenant,
    run_drift,
    run_migrating,
    run_start_up,
    run_status,
)

DEFAULT_SCENARIOS = ["deploy", "rollout", "bootstrap", "noop", "status", "drift",
                     "create-tenant"]
# bootstrap creates ~20 relations per tenant per tool and repeat: by default only up to this N
BOOTSTRAP_MAX_N = 1000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="fleet sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS))
    p.add_argument("--dsn", help="use this server instead of starting an embedded one")
    p.add_argument("--data-dir", type=Path,
                   help="make the embedded server's data folder in this folder (default: the "
                        "system's temporary folder), e.g. on another file system")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="added client-server round-trip time (a delaying TCP proxy)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[],
                   help="archify concurrency settings to compare with its default (the "
                        "headline, sized to the server)")
    p.add_argument("--bootstrap-max-n", type=int, default=BOOTSTRAP_MAX_N,
                   help="skip bootstrap above this N (it is the slowest to reset)")
    p.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI runs")
    p.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    p.add_argument("--docs-section", help="the results section to rewrite (default: "
                                          "\"latency\" with --latency-ms, else \"local\")")
    args = p.parse_args(argv)
    if args.data_dir and args.dsn:
        p.error("--data-dir is where the embedded server keeps its data; not with --dsn")
    if args.data_dir and not args.data_dir.is_dir():
        p.error(f"--data-dir {args.data_dir}: no such folder")
    return args


@contextmanager
def latency_proxy(admin_dsn: str, delay_ms: float) -> Iterator[int | None]:
    """The port of a delaying proxy in front of the server, or None without latency."""
    if not delay_ms:
        yield None
        return
    host, where = server.socket_target(admin_dsn)
    target = f"unix:{where}" if host == "unix" else f"{host}:{where}"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.latency_proxy", "--target", target,
                             "--delay-ms", str(delay_ms)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait()


async def build_fleets(ctx: Context, n: int, scenarios: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for name in scenarios:
        s = SCENARIOS[name]
        if s.fleet in names:
            continue
        db = f"bench_fleet_{s.fleet}_{n}"
        started = time.perf_counter()
        await server.drop_database(ctx.admin_dsn, db)
        await server.admin(ctx.admin_dsn, f'CREATE DATABASE "{db}"')
        await build_fleet(server.database_dsn(ctx.admin_dsn, db), load(s, ctx.root), s.before, n)
        names[s.fleet] = db
        ctx.log(f"built {db} in {time.perf_counter() - started:.1f} s")
    return names


async def bench(args: argparse.Namespace, admin_dsn: str, proxy_port: int | None,
                root: Path) -> list[Result]:
    def tool_dsn(db: str) -> str:
        dsn = server.database_dsn(admin_dsn, db)
        return server.via_proxy(dsn, proxy_port) if proxy_port else dsn

    concurrencies: tuple[int | None, ...] = (None, *dict.fromkeys(args.concurrency))
    ctx = Context(admin_dsn, tool_dsn, root, args.repeats, concurrencies, log)
    results: list[Result] = []
    if not args.no_cli:
        results.append(await run_start_up(ctx))
    if proxy_port:
        direct, proxied = await server.round_trip_ms(admin_dsn), await server.round_trip_ms(
            tool_dsn("postgres"))
        ctx.log(f"round trip: {direct:.3f} ms direct, {proxied:.3f} ms through the proxy")
        args.rtt = (direct, proxied)
    wanted = {n: [s for s in args.scenarios if s != "bootstrap" or n <= args.bootstrap_max_n]
              for n in args.n}
    fleets = {n: await build_fleets(ctx, n, wanted[n]) for n in args.n}
    # create-tenant runs first, on the fleets of every n at once, before any scenario
    # deletes relation files: on ext4 without a journal a file created within minutes of
    # many deletions costs up to 20 times more (the kernel skips every recently deleted
    # inode), which would measure the file system's last minutes, not the fleet's size
    # (docs/performance.md, "Creating relation files").
    if "create-tenant" in args.scenarios:
        s = SCENARIOS["create-tenant"]
        started = time.perf_counter()
        results += await run_create_tenant(
            ctx, s, {n: fleets[n][s.fleet] for n in args.n}, load(s, root))
        ctx.log(f"create-tenant N={', '.join(map(str, args.n))} done in "
                f"{time.perf_counter() - started:.1f} s")
    for n in args.n:
        for name in wanted[n]:
            s = SCENARIOS[name]
            if name == "create-tenant":
                continue
            started = time.perf_counter()
            migrations = load(s, root)
            db = fleets[n][s.fleet]
            if name == "drift":
                r = await run_drift(ctx, s, n, db, migrations)
            elif name == "status":
                r = await run_status(ctx, s, n, db, migrations, not args.no_cli)
            else:
                r = await run_migrating(ctx, s, n, db, migrations, not args.no_cli)
            results.append(r)
            ctx.log(f"{name} N={n} done in {time.perf_counter() - started:.1f} s")
    for names in fleets.values():
        for db in names.values():
            await server.drop_database(admin_dsn, db)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    command = "python -m benchmarks.run " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("postgres"))
    with server.server(args.dsn, args.data_dir) as admin_dsn, \
            tempfile.TemporaryDirectory() as tmp, latency_proxy(admin_dsn, args.latency_ms) as port:
        results = run_async(bench, args, admin_dsn, port, Path(tmp))
        machine = run_async(report.machine, admin_dsn)
    text = report.render(results, machine_line=machine, command=command, repeats=args.repeats,
                         latency_ms=args.latency_ms, wall_s=time.perf_counter() - started,
                         rtt=getattr(args, "rtt", None))
    print(text)
    if args.write_docs:
        report.write_docs(text, args.docs_section or ("latency" if args.latency_ms else "local"))
        log(f"wrote {report.DOCS}")


if __name__ == "__main__":
    main()
