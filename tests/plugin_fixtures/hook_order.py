"""A plugin that records the order of the per-schema hooks, in memory and, for the CLI
tests (--plugin tests.plugin_fixtures.hook_order:plugin), in the file named by
$ARCHIFY_TEST_HOOK_LOG: whether schemas went out in batches shows in that order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archify_core import hookimpl

LOG_ENV = "ARCHIFY_TEST_HOOK_LOG"


class HookOrder:
    """The order of the hooks: a batch starts every schema in it before any migration in
    it is reported applied (one at a time, a schema's migration comes before the next
    schema starts)."""

    def __init__(self, calls: list[tuple[str, str]] | None = None) -> None:
        self.calls: list[tuple[str, str]] = calls or []

    @classmethod
    def read(cls, path: Path) -> HookOrder:
        """The calls a CLI process wrote (see _add)."""
        return cls([(kind, schema) for kind, schema in
                    (line.split() for line in path.read_text().splitlines())])

    def _add(self, kind: str, schema: str) -> None:
        self.calls.append((kind, schema))
        if log := os.environ.get(LOG_ENV):
            with open(log, "a") as f:
                f.write(f"{kind} {schema}\n")

    @hookimpl
    def archify_before_schema(self, schema: str) -> None:
        self._add("before", schema)

    @hookimpl
    def archify_after_migration(self, schema: str) -> None:
        self._add("applied", schema)

    @hookimpl
    def archify_after_schema(self, result: Any) -> None:
        self._add("after", result.schema)

    def batched(self) -> bool:
        """Whether some schema started while another one's migration was under way."""
        for i, (kind, schema) in enumerate(self.calls):
            if kind == "before":
                applied = self.calls.index(("applied", schema)) if (
                    ("applied", schema) in self.calls) else len(self.calls)
                if any(k == "before" for k, _ in self.calls[i + 1:applied]):
                    return True
        return False

    def paired(self) -> bool:
        """Every schema: before, its migrations, after; in that order, once each."""
        for schema in {s for _, s in self.calls}:
            kinds = [kind for kind, s in self.calls if s == schema]
            if kinds[0] != "before" or kinds[-1] != "after" or kinds.count("after") != 1:
                return False
        return True


plugin = HookOrder()
