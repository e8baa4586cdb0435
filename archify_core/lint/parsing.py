"""From a migration file to parsed statements with their line in the file.

SQL is parsed by pglast (libpg_query: PostgreSQL's own grammar); Python is read
with `ast` to find where each SQL literal sits, so that a finding names the
file's line, not the SQL string's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pglast import ast as pg
from pglast import parse_sql
from pglast.parser import ParseError, scan

SQL_CALLS = frozenset(("execute", "executemany", "fetch", "fetchrow", "fetchval", "copy"))


@dataclass(frozen=True, slots=True)
class Statement:
    """One parsed SQL statement: its pglast node, its text and its first line in the file."""

    node: pg.Node
    sql: str
    line: int


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    line: int
    offset: int  # in the SQL string: a silence applies to the statement after it


@dataclass(frozen=True, slots=True)
class ParsedSql:
    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...]


class SqlSyntaxError(Exception):
    """The SQL does not parse; `line` is the file's line of the parser's position."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def parse(sql: str, first_line: int = 1, *, spans_lines: bool = True) -> ParsedSql:
    """Parse `sql`, whose first character is on line `first_line` of its file; when the
    SQL's lines are not the file's (`spans_lines` False: a one-line literal with \\n
    escapes, SQL built at import time), every statement is on `first_line`."""
    def line_of(offset: int) -> int:
        return first_line + (sql.count("\n", 0, offset) if spans_lines else 0)

    try:
        raws = parse_sql(sql)
    except ParseError as exc:
        message, position = exc.args[0], exc.args[1] if len(exc.args) > 1 else 0
        raise SqlSyntaxError(str(message), line_of(position)) from None
    comments = tuple(Comment(sql[t.start:t.end + 1], line_of(t.start), t.start)
                     for t in scan(sql) if t.name in ("SQL_COMMENT", "C_COMMENT"))
    statements = []
    for raw in raws:
        start = raw.stmt_location
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        statements.append(Statement(raw.stmt, sql[start:end].strip(),
                                    line_of(_first_token(sql, start, comments))))
    return ParsedSql(tuple(statements), comments)


def _first_token(sql: str, start: int, comments: tuple[Comment, ...]) -> int:
    """Where the statement's first token is: a statement's location includes the space
    and comments before it."""
    position = start
    while True:
        while position < len(sql) and sql[position].isspace():
            position += 1
        comment = next((c for c in comments if c.offset == position), None)
        if comment is None:
            return position
        position += len(comment.text)


def walk(node: Any) -> Iterator[pg.Node]:
    """Every pglast node under `node` (itself included), depth first."""
    if isinstance(node, pg.Node):
        yield node
        for name in node.__slots__:
            yield from walk(getattr(node, name, None))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk(item)


# -- Python files -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SqlLiteral:
    """An SQL string of a Python migration, the line it starts on, and whether its lines
    are the file's (a literal written over as many lines as its value has)."""

    sql: str
    line: int
    spans_lines: bool = True


def sql_literal(source: str, name: str, const: str, sql: str) -> SqlLiteral:
    """`sql` placed in the file: the literal returned by `name()` or assigned to `const`
    when it is that very string, else on the line of the def or assignment (SQL built
    at import time), else on line 1."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    return _literal(ret.value, sql, node.lineno)
            return SqlLiteral(sql, node.lineno, spans_lines=False)
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == const for t in node.targets):
            return _literal(node.value, sql, node.lineno)
    return SqlLiteral(sql, 1, spans_lines=False)


def _literal(value: ast.expr, sql: str, fallback: int) -> SqlLiteral:
    if isinstance(value, ast.Constant) and value.value == sql:
        return _of(value)
    return SqlLiteral(sql, fallback, spans_lines=False)


def _of(constant: ast.Constant) -> SqlLiteral:
    text = str(constant.value)
    spans = (constant.end_lineno or constant.lineno) - constant.lineno == text.count("\n")
    return SqlLiteral(text, constant.lineno, spans_lines=spans)


def python_step_literals(source: str, name: str) -> tuple[list[SqlLiteral], list[int]]:
    """The SQL literals `async def name(conn)` passes to conn.execute/fetch…, and the lines
    of the calls whose SQL is not a literal (skipped)."""
    literals: list[SqlLiteral] = []
    skipped: list[int] = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.AsyncFunctionDef) and node.name == name):
            continue
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in SQL_CALLS and call.args):
                continue
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                literals.append(_of(first))
            else:
                skipped.append(call.lineno)
    return literals, skipped


def read_source(path: Path) -> str:
    return path.read_text(encoding="utf-8")
