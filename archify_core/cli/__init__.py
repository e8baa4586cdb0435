"""The `archify` command line: a thin front end over Engine.

Commands live in `commands.py`, the global options (accepted before or after the
command) in `options.py`, output in `output.py`, `progress.py` and `render.py`,
and running the work with its error mapping in `running.py`; `archify lint` is in
`lint_command.py`.
Exit codes: 0 all good, 1 some schema failed, 2 bad input or configuration.
"""

from __future__ import annotations

from typing import Any

from . import (
    drift_command,  # noqa: F401  (registers `archify drift`)
    lint_command,  # noqa: F401  (registers `archify lint`)
)
from .commands import cli

__all__ = ["cli", "main"]


def main(args: list[str] | None = None, prog_name: str | None = None) -> Any:
    return cli.main(args=args, prog_name=prog_name or "archify")
