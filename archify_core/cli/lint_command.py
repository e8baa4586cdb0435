"""`archify lint`: the migration files checked for what is unsafe on a live fleet.

Offline by default (no database); with --dsn (or ARCHIFY_DSN / DATABASE_URL) each
finding on a table also says what the fleet stakes on it. pglast loads only when
the command runs, never for --help.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from . import output
from .commands import cli, pass_settings
from .options import Settings
from .running import EXIT_FAILED, guarded, run

if TYPE_CHECKING:
    from ..engine import Engine
    from ..lint import Finding, LintReport


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--all", "show_all", is_flag=True,
              help="Also show the findings that are allowed (silenced), with the reason.")
@pass_settings
def lint(settings: Settings, as_json: bool, show_all: bool) -> None:
    """Check every migration file for statements unsafe on a live fleet (docs/lint.md).
    Exits 1 when an error-level finding stands, 2 on bad input."""
    from ..dsn import dsn_from_env

    migrations = guarded(settings.migration_set)
    if settings.dsn or dsn_from_env():
        report = run(settings, lambda engine: _lint(engine), one_database="archify lint --dsn")
    else:
        report = guarded(lambda: offline_lint(settings))
    shown = report.findings if show_all else report.standing
    if as_json:
        output.stdout.write(json.dumps([f.to_dict() for f in shown]) + "\n")
    else:
        output.stdout.lines(_lines(shown, len(migrations)))
    for note in report.notes:
        output.stderr.line(f"note: {note}")  # stderr: --json's stdout stays one document
    output.exit_with(EXIT_FAILED if report.errors else 0)


async def _lint(engine: Engine) -> LintReport:
    return await engine.lint()


def offline_lint(settings: Settings) -> LintReport:
    """Without a database: the same linting, plugin rules included, and no stakes."""
    from ..event_loop import run_async
    from ..lint.fleet import lint
    from ..plugins import load_plugin_reference, make_plugin_manager

    pm = make_plugin_manager([load_plugin_reference(p) for p in settings.plugins],
                             blocked=settings.blocked_plugins)
    return run_async(lambda: lint(settings.migration_set(), pm))


def _lines(findings: list[Finding], files: int) -> list[str]:
    lines = []
    for finding in findings:
        lines.append(finding.describe())
        lines.append(f"    safer: {finding.safe}")
        if finding.silenced:
            lines.append(f"    allowed: {finding.silenced}")
    standing = [f for f in findings if f.silenced is None]
    errors = sum(f.severity.value == "error" for f in standing)
    verdict = "✓" if not errors else "✗"
    lines.append(f"{verdict} {files} migration file{'s' if files != 1 else ''} linted: "
                 f"{errors} error{'s' if errors != 1 else ''}, "
                 f"{len(standing) - errors} warning{'s' if len(standing) - errors != 1 else ''}")
    return lines
