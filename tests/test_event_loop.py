"""The CLI's and the operators' way into the async API: a fresh loop, uvloop's where
installed (a dependency on Linux and macOS)."""

from __future__ import annotations

import asyncio

from archify_core.event_loop import run_async, uvloop_available


async def _loop_module(x: int) -> tuple[int, str]:
    return x * 2, type(asyncio.get_running_loop()).__module__


def test_run_async_returns_the_result_on_uvloop() -> None:
    assert uvloop_available()
    doubled, module = run_async(_loop_module, 21)
    assert doubled == 42
    assert module.startswith("uvloop")
