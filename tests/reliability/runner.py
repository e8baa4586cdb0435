"""A rollout in its own process, for tests that kill it: `python -m tests.reliability.runner
DSN MIGRATIONS [CONCURRENCY]`. Prints `started` once the first schema starts, so the
parent can aim its SIGKILL at the middle of the rollout; exits 0 if everything applied."""

from __future__ import annotations

import sys

import anyio

from archify_core import Engine
from archify_core.events import Event, SchemaStarted


def _announce(event: Event) -> None:
    if isinstance(event, SchemaStarted) and not _announce.done:  # type: ignore[attr-defined]
        _announce.done = True  # type: ignore[attr-defined]
        print("started", flush=True)


_announce.done = False  # type: ignore[attr-defined]


async def main(dsn: str, migrations: str, concurrency: int) -> int:
    async with Engine(dsn, migrations, concurrency=concurrency, load_entry_points=False,
                      on_event=_announce) as engine:
        report = await engine.migrate("tenants")
    print("finished", "ok" if report.ok else "failed", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    dsn, folder = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    sys.exit(anyio.run(main, dsn, folder, workers))
