"""Running the async API from synchronous code (the CLI, Airflow tasks, the benchmark).

A rollout is thousands of small round trips, so the event loop's own cost per
round trip is client CPU that competes with the server (on a two-core machine,
~0.16 ms a schema with asyncio's loop). uvloop, where it is installed (it is a
dependency on Linux and macOS), cuts that by about a sixth. Applications that
await the API directly keep whatever loop they run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run_async(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `func(*args)` to completion on a fresh event loop (uvloop when installed).

    The result is handed back through a box, not as the main task's result: when the
    run ends, asyncio's Runner asks `signal.getsignal(SIGINT)`, which formats its
    handler (a partial holding the main task) into an error message it then drops, and
    so reprs the task with its result, twice. For a report of 10,000 schemas that repr
    took 70 ms of every command (Python 3.11)."""
    box: list[T] = []

    async def boxed() -> None:
        box.append(await func(*args))

    anyio.run(boxed, backend_options={"use_uvloop": uvloop_available()})
    return box[0]
