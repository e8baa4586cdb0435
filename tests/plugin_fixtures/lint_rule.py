"""A plugin adding one lint rule through archify_lint_rules (async, to show it may be)."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from archify_core import hookimpl
from archify_core.lint import Hit, LintContext, Rule, Severity


def _no_truncate(ctx: LintContext) -> Iterator[Hit]:
    for statement in ctx.statements:
        if isinstance(statement.node, ast.TruncateStmt):
            yield Hit(statement, "TRUNCATE deletes the rows of every tenant")


NO_TRUNCATE = Rule("no-truncate", Severity.ERROR, "delete in batches, by tenant", _no_truncate)


@hookimpl
async def archify_lint_rules() -> list[Rule]:
    return [NO_TRUNCATE]
