"""Linting as the engine does it: plugin rules from the hook, the project's config, the
fleet's stakes; and the warnings a rollout gives before its pending migrations run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import pluggy

from ..events import Event, Notice
from ..ledger import Queryable
from ..migration import Migration, MigrationSet
from ..plugins import call_hook
from .findings import LintReport
from .linter import lint_migrations
from .rules import BUILTIN_RULES, Rule
from .silencing import LintConfig, load_config
from .stakes import read_stakes, with_stakes


def project_config(migrations: MigrationSet) -> LintConfig:
    """The lint config of the project the migrations belong to: in the folder above
    them, else in the working directory."""
    places = [migrations.directory.parent] if migrations.directory else []
    for place in [*places, Path.cwd()]:
        config = load_config(place)
        if config.source:
            return config
    return LintConfig()


async def plugin_rules(pm: pluggy.PluginManager) -> list[Rule]:
    return [rule for rules in await call_hook(pm, "archify_lint_rules") for rule in rules or ()]


async def lint(migrations: MigrationSet, pm: pluggy.PluginManager, *,
               versions: Iterable[str] | None = None, config: LintConfig | None = None,
               conn: Queryable | None = None) -> LintReport:
    """Lint the migrations (those of `versions`, or all); with `conn`, say what the
    fleet stakes on each standing finding's table (one catalog query)."""
    rules = await plugin_rules(pm)
    wanted = None if versions is None else set(versions)
    chosen = [m for m in migrations if wanted is None or m.version in wanted]
    # parsing and the config file are blocking work: off the event loop (an app's, maybe)
    report = await anyio.to_thread.run_sync(
        lambda: lint_migrations(chosen, config or project_config(migrations), rules))
    if conn is None:
        return report
    tables = {f.table for f in report.standing if f.table}
    sizes = await read_stakes(conn, tables)
    return with_stakes(report, sizes, chosen, (*BUILTIN_RULES, *rules))


class PendingWarnings:
    """Warns (Notice events) about the standing findings of each migration the first
    time a plan has it pending, before it runs anywhere (Engine.migrate)."""

    def __init__(self, migrations: MigrationSet, pm: pluggy.PluginManager,
                 emit: Callable[[Event], None], conn: Queryable,
                 config: LintConfig | None = None) -> None:
        self.migrations, self.pm, self.emit, self.conn = migrations, pm, emit, conn
        self.config = config
        self.seen: set[str] = set()

    async def warn(self, pending: Iterable[Migration]) -> None:
        new = [m.version for m in pending if m.version not in self.seen]
        if not new:
            return
        self.seen.update(new)
        try:
            report = await lint(self.migrations, self.pm, versions=new, config=self.config,
                                conn=self.conn)
        except Exception as exc:  # a warning must never stop the rollout: say so instead
            self.emit(Notice(f"lint: could not lint {', '.join(new)}: "
                             f"{type(exc).__name__}: {exc}; run `archify lint`"))
            return
        for finding in report.standing:
            self.emit(Notice(f"lint: {finding.describe()}; safer: {finding.safe}"))
