"""`archify lint`: migration files checked for what is unsafe on a live fleet.

Parsing (`parsing`) is pglast, PostgreSQL's own grammar; the rules (`rules`) are
pure functions over parsed statements; `silencing` reads allow comments and the
project's configuration; `linter` makes the findings (`findings`); `stakes`
weighs them over every tenant with one catalog query. Importing this package
imports pglast: the CLI and the engine import it only when they lint.
"""

from .findings import Finding, LintReport, Severity
from .linter import lint_migrations
from .rules import BUILTIN_RULES, Hit, LintContext, Rule
from .silencing import LintConfig, load_config
from .stakes import read_stakes, with_stakes

__all__ = [
    "BUILTIN_RULES",
    "Finding",
    "Hit",
    "LintConfig",
    "LintContext",
    "LintReport",
    "Rule",
    "Severity",
    "lint_migrations",
    "load_config",
    "read_stakes",
    "with_stakes",
]
