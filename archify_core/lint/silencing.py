"""Allowing a finding: a comment in the file, with its reason, or the project's config.

In the SQL, `-- archify: allow <rule> because <why>` allows <rule> for the statement
after it (or the one it sits in); in a Python file, a `# archify: allow …` line
allows it for the whole file (for file-wide findings such as no-downgrade).
The configuration is `[tool.archify.lint]` in pyproject.toml or `[lint]` in
archify.toml: `allow = [rules]`, `severity = {rule = "error" | "warning" | "off"}`.
"""

from __future__ import annotations

import io
import re
import tokenize
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError
from .findings import Severity

# Over a comment's text only, never over SQL.
ALLOW = re.compile(r"archify:\s*allow\s+(?P<rule>[a-z0-9_-]+)(?:\s+because\s+(?P<why>.*\S))?",
                   re.I)


@dataclass(frozen=True, slots=True)
class Silence:
    rule: str
    reason: str | None  # None: no reason given, so it silences nothing
    line: int
    offset: int = -1  # in the SQL (-1: a Python comment, for the whole file)


def silence_in(text: str, line: int, offset: int = -1) -> Silence | None:
    found = ALLOW.search(text.lstrip("-/* #"))
    if found is None:
        return None
    return Silence(found["rule"].lower(), found["why"], line, offset)


def python_silences(source: str) -> list[Silence]:
    """The `# archify: allow` comments of a Python file (file-wide)."""
    silences = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            silence = (silence_in(token.string, token.start[0])
                       if token.type == tokenize.COMMENT else None)
            if silence is not None:
                silences.append(silence)
    except (tokenize.TokenError, SyntaxError):
        pass  # the loader already refused a file Python cannot read
    return silences


@dataclass(frozen=True, slots=True)
class LintConfig:
    """A project's lint settings: rules allowed everywhere, and severities changed."""

    allow: frozenset[str] = frozenset()
    severity: dict[str, Severity | None] = field(default_factory=dict)  # None: off
    source: str = ""

    def severity_of(self, rule: str, default: Severity) -> Severity | None:
        return self.severity.get(rule, default)


def load_config(directory: Path) -> LintConfig:
    """archify.toml's [lint], else pyproject.toml's [tool.archify.lint], in `directory`;
    an empty config when neither has one."""
    for name, keys in (("archify.toml", ("lint",)), ("pyproject.toml", ("tool", "archify",
                                                                          "lint"))):
        path = directory / name
        if not path.is_file():
            continue
        try:
            table: object = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
        for key in keys:
            table = table.get(key, {}) if isinstance(table, dict) else {}
        if table:
            return config_from(table, f"{path}")
    return LintConfig()


def config_from(table: object, source: str) -> LintConfig:
    if not isinstance(table, dict):
        raise ConfigurationError(f"{source}: the lint table must be a table")
    unknown = sorted(set(table) - {"allow", "severity"})
    if unknown:
        raise ConfigurationError(f"{source}: unknown lint setting {unknown[0]!r} "
                                 "(known: allow, severity)")
    allow = table.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(r, str) for r in allow):
        raise ConfigurationError(f"{source}: lint allow must be a list of rule ids")
    severities: dict[str, Severity | None] = {}
    for rule, value in dict(table.get("severity", {})).items():
        if value not in ("error", "warning", "off"):
            raise ConfigurationError(f"{source}: lint severity of {rule!r} must be "
                                     f"\"error\", \"warning\" or \"off\", not {value!r}")
        severities[rule] = None if value == "off" else Severity(value)
    return LintConfig(frozenset(allow), severities, source)
