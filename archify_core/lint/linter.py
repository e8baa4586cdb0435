"""Linting migration files: pure, from a migration set and rules to a LintReport."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pglast import ast as pg

from ..errors import ConfigurationError
from ..migration import Migration
from .findings import Finding, LintReport
from .parsing import (
    ParsedSql,
    SqlLiteral,
    SqlSyntaxError,
    Statement,
    parse,
    python_step_literals,
    sql_literal,
)
from .rules import BUILTIN_RULES, SILENCE_WITHOUT_REASON, SYNTAX_ERROR, Hit, LintContext, Rule
from .silencing import LintConfig, Silence, python_silences, silence_in


def lint_migrations(migrations: Iterable[Migration], config: LintConfig | None = None,
                    rules: Sequence[Rule] = ()) -> LintReport:
    """Lint each migration's upgrade SQL with the built-in rules and `rules` (a plugin's)."""
    config = config or LintConfig()
    every_rule = (*BUILTIN_RULES, *rules)
    _check_config(config, every_rule)
    report = LintReport()
    for migration in migrations:
        _lint_one(migration, config, every_rule, report)
    # in the order a reader meets them: file by file (filename order), line by line
    report.findings.sort(key=lambda f: (f.file, f.line))
    return report


def _check_config(config: LintConfig, rules: Sequence[Rule]) -> None:
    known = {r.id for r in (*rules, SYNTAX_ERROR, SILENCE_WITHOUT_REASON)}
    for rule in sorted((config.allow | set(config.severity)) - known):
        raise ConfigurationError(f"{config.source}: unknown lint rule {rule!r} (known: "
                                 f"{', '.join(sorted(known))})")


@dataclass(slots=True)
class _File:
    """One file being linted: where findings go, and what silences them."""

    migration: Migration
    config: LintConfig
    report: LintReport
    silences: list[Silence]

    @property
    def name(self) -> str:
        return str(self.migration.path)

    def add(self, rule: Rule, line: int, message: str, table: str | None = None,
            statement_offset: int | None = None) -> None:
        severity = self.config.severity_of(rule.id, rule.severity)
        if severity is None:
            return
        finding = Finding(rule.id, severity, self.name, line, message, rule.safe,
                          version=self.migration.version, table=table)
        self.report.findings.append(replace(finding, silenced=self._reason(
            rule.id, statement_offset)))

    def _reason(self, rule: str, statement_offset: int | None) -> str | None:
        if rule in self.config.allow:
            return f"allowed in {self.config.source}"
        for silence in self.silences:
            if silence.rule != rule or silence.reason is None:
                continue
            if silence.offset < 0 or silence.offset == statement_offset:
                return silence.reason
        return None


def _lint_one(migration: Migration, config: LintConfig, rules: Sequence[Rule],
              report: LintReport) -> None:
    try:
        source = migration.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        source = ""  # a migration built in memory: its SQL alone, from line 1
    file = _File(migration, config, report, python_silences(source))
    parsed = _parse_upgrade(migration, source, file)
    if parsed is None:
        return
    statements = tuple(s for p in parsed for s in p.statements)
    # a silence in the SQL applies to the statement after it (or the one it is in)
    for piece in parsed:
        for comment in piece.comments:
            if (silence := silence_in(comment.text, comment.line)) is not None:
                file.silences.append(replace(silence, offset=_owner(statements, comment.line)))
    for silence in file.silences:
        if silence.reason is None:
            file.add(SILENCE_WITHOUT_REASON, silence.line,
                     f"allows {silence.rule} without saying why; it silences nothing")
    ctx = LintContext(migration, statements, _created_tables(statements))
    offsets = {id(s): i for i, s in enumerate(statements)}
    for rule in rules:
        for hit in rule.check(ctx):
            _place(file, rule, hit, migration, offsets)


def _place(file: _File, rule: Rule, hit: Hit, migration: Migration,
           offsets: dict[int, int]) -> None:
    if hit.statement is None:
        file.add(rule, 1, hit.message, hit.table)
    else:
        file.add(rule, hit.statement.line, hit.message, hit.table,
                 offsets.get(id(hit.statement)))


def _owner(statements: tuple[Statement, ...], line: int) -> int:
    """The statement a comment on `line` belongs to (its index): the first one that ends
    on or after that line, so a comment before a statement, inside it or after it on its
    last line."""
    for index, statement in enumerate(statements):
        if statement.line + statement.sql.count("\n") >= line:
            return index
    return -2  # after the last statement: silences nothing


def _parse_upgrade(migration: Migration, source: str, file: _File) -> list[ParsedSql] | None:
    """The upgrade SQL parsed, in pieces (one per SQL literal); None when it does not
    parse (reported as syntax-error)."""
    if migration.is_python:
        literals, skipped = python_step_literals(source, "upgrade")
        file.report.notes += [f"{file.name}:{line}: SQL built at run time is not linted"
                              for line in skipped]
        pieces: list[SqlLiteral] = literals
    else:
        pieces = [sql_literal(source, "upgrade", "UPGRADE_SQL", migration.upgrade_sql)]
    parsed: list[ParsedSql] = []
    for literal in pieces:
        try:
            piece = parse(literal.sql, literal.line, spans_lines=literal.spans_lines)
        except SqlSyntaxError as exc:
            file.add(SYNTAX_ERROR, exc.line, f"does not parse: {exc.message}")
            return None
        parsed.append(piece)
    return parsed


def _created_tables(statements: tuple[Statement, ...]) -> frozenset[str]:
    names = set()
    for statement in statements:
        node = statement.node
        if isinstance(node, pg.CreateStmt):
            names.add(node.relation.relname)
        elif isinstance(node, pg.CreateTableAsStmt):
            names.add(node.into.rel.relname)
    return frozenset(names)
