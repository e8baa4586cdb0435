"""The scheduler suite: deselected unless the mark expression names it (`make
test-scheduler` runs `pytest -m scheduler tests/scheduler`), like the soak tests."""

from __future__ import annotations

import pytest

SCHEDULER = "scheduler"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SCHEDULER in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker(SCHEDULER)]
    if chosen:
        config.hook.pytest_deselected(items=chosen)
        items[:] = [item for item in items if not item.get_closest_marker(SCHEDULER)]
