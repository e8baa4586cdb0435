"""`archify drift`: tenants whose schema's structure differs from the others'.

Structural drift, not the checksum drift `validate` reports. Exit 0 when every tenant
is alike, 1 when any differs, 2 on bad input.
"""

from __future__ import annotations

import json

import click

from . import output
from .commands import cli, pass_settings
from .options import Settings
from .render import plural
from .running import exit_for, run


@cli.command()
@click.option("--against", type=click.Choice(["majority", "migrations"]), default="majority",
              show_default=True,
              help="The reference: the largest group of alike tenants, or the structure the "
                   "tenant migrations build (in a scratch schema that is rolled back).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@pass_settings
def drift(settings: Settings, against: str, as_json: bool) -> None:
    """Find tenants whose structure (tables, columns, indexes, constraints, sequences,
    views, functions, triggers, types) differs from the reference. Exits 1 when any does."""
    report = run(settings, lambda engine: engine.structural_drift(against=against),
                 one_database="archify drift")
    if as_json:
        output.stdout.write(json.dumps(report.to_dict()) + "\n")
    elif report.ok:
        output.stdout.line(f"✓ {plural(len(report.alike), 'tenant')} alike "
                           f"(reference: {against})")
    else:
        drifted = len(report.drifted)
        output.stdout.lines([
            f"✗ {plural(drifted, 'tenant')} of {len(report.alike) + drifted} "
            f"differ from the reference ({against})",
            *(f"  {line}" for line in report.lines()),
        ])
    exit_for(report.ok)
