"""One archify measurement in its own process, so its peak RSS is its own.

Prints one JSON line: {"seconds": engine time, "samples": [...], "ok": bool}.
Engine time covers `async with Engine(...)` (loading migrations, opening the
pool) and the call itself; interpreter start-up and imports are not in it (the
CLI measurement includes them).

    python -m benchmarks.archify_runner --dsn DSN --migrations DIR --work rollout
"""

from __future__ import annotations

import argparse
import json
import time

from archify_core import Engine
from archify_core.event_loop import run_async

from .peak_rss import report_at_exit


async def measure(dsn: str, migrations: str, work: str, concurrency: int | None,
                  count: int, prefix: str) -> dict[str, object]:
    started = time.perf_counter()
    samples: list[float] = []
    ok = True
    async with Engine(dsn, migrations, concurrency=concurrency,
                      load_entry_points=False) as engine:
        if work == "migrate":
            report = await engine.migrate("tenants")
            ok = report.ok
        elif work == "status":
            fleet = await engine.status()
            ok = fleet.pending_count == 0 and len(fleet.tenants) == count
        elif work == "create":
            for i in range(count):
                t0 = time.perf_counter()
                await engine.create_tenant(f"{prefix}{i:04d}")
                samples.append(time.perf_counter() - t0)
        else:
            raise SystemExit(f"unknown work {work!r}")
    return {"seconds": time.perf_counter() - started, "samples": samples, "ok": ok}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--migrations", required=True)
    parser.add_argument("--work", required=True, choices=["migrate", "status", "create"])
    parser.add_argument("--concurrency", type=int, default=None, help="default: the engine's")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--prefix", default="bench_new_")
    args = parser.parse_args()
    report_at_exit()
    result = run_async(measure, args.dsn, args.migrations, args.work, args.concurrency,
                       args.count, args.prefix)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
