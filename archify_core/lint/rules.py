"""The built-in lint rules: each a small pure function over a migration's statements.

A rule yields Hits; the linter turns them into Findings (file, line, severity,
silencing). Plugins add Rule values of their own through the
`archify_lint_rules` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pglast import ast as pg
from pglast.enums import AlterTableType, ConstrType, ObjectType

from ..migration import Migration
from .findings import Severity
from .parsing import Statement, walk

# Schemas a tenant migration may name: the system's own, never another tenant's or public.
SYSTEM_SCHEMAS = frozenset(("pg_catalog", "information_schema", "pg_temp"))
# Functions whose value differs per row: a default calling one rewrites the table
# (a stable one such as now() is evaluated once and stored in the catalog).
VOLATILE_FUNCTIONS = frozenset((
    "random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
    "uuid_generate_v4", "uuidv4", "uuidv7", "clock_timestamp", "timeofday", "nextval",
    "txid_current", "setseed",
))
SERIAL_TYPES = frozenset(("serial", "serial2", "serial4", "serial8", "smallserial",
                          "bigserial"))


@dataclass(frozen=True, slots=True)
class LintContext:
    """What a rule sees: the migration and its parsed upgrade statements."""

    migration: Migration
    statements: tuple[Statement, ...]
    created_tables: frozenset[str]  # tables this migration creates (new: no stakes)

    def existing(self, relation: pg.RangeVar | None) -> bool:
        return relation is not None and relation.relname not in self.created_tables


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule's finding before the linter places it: the statement (None for the file
    as a whole), why in one line, and the table at stake."""

    statement: Statement | None
    message: str
    table: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A lint rule: `check` yields a Hit per unsafe statement. `stakes` is the verb
    that weighs it over the fleet ("rewrites", "locks"), None when size does not matter."""

    id: str
    severity: Severity
    safe: str
    check: Callable[[LintContext], Iterable[Hit]]
    stakes: str | None = None


def alter_commands(ctx: LintContext) -> Iterator[tuple[Statement, pg.AlterTableStmt,
                                                       pg.AlterTableCmd]]:
    """(statement, ALTER TABLE, one of its commands) for each existing table altered."""
    for statement in ctx.statements:
        node = statement.node
        if isinstance(node, pg.AlterTableStmt) and ctx.existing(node.relation):
            for cmd in node.cmds or ():
                yield statement, node, cmd


def _index_without_concurrently(ctx: LintContext) -> Iterator[Hit]:
    for statement in ctx.statements:
        node = statement.node
        if isinstance(node, pg.IndexStmt) and not node.concurrent and ctx.existing(
                node.relation):
            table = node.relation.relname
            yield Hit(statement, f"CREATE INDEX on existing table {table} blocks its "
                                 "writes while the index builds", table)


def _concurrently_in_transaction(ctx: LintContext) -> Iterator[Hit]:
    if not ctx.migration.transactional:
        return
    for statement in ctx.statements:
        node = statement.node
        if isinstance(node, pg.IndexStmt | pg.DropStmt) and node.concurrent:
            yield Hit(statement, "CONCURRENTLY cannot run inside a transaction block, and "
                                 "this migration runs in one: it will fail")
        if isinstance(node, pg.ReindexStmt) and any(
                getattr(p, "defname", None) == "concurrently" for p in node.params or ()):
            yield Hit(statement, "REINDEX CONCURRENTLY cannot run inside a transaction "
                                 "block, and this migration runs in one: it will fail")


def _column_commands(ctx: LintContext, subtype: AlterTableType,
                     says: str) -> Iterator[Hit]:
    """A hit per ALTER TABLE … ALTER COLUMN of `subtype`; `says` names {column}."""
    for statement, alter, cmd in alter_commands(ctx):
        if cmd.subtype == subtype:
            table = alter.relation.relname
            yield Hit(statement, says.format(column=f"{table}.{cmd.name}"), table)


def _column_type_change(ctx: LintContext) -> Iterator[Hit]:
    return _column_commands(ctx, AlterTableType.AT_AlterColumnType,
                            "changing the type of {column} rewrites the table under an "
                            "ACCESS EXCLUSIVE lock")


def _volatile_default(ctx: LintContext) -> Iterator[Hit]:
    for statement, alter, cmd in alter_commands(ctx):
        if cmd.subtype != AlterTableType.AT_AddColumn or not isinstance(cmd.def_,
                                                                        pg.ColumnDef):
            continue
        column, table = cmd.def_, alter.relation.relname
        defaults = [c.raw_expr for c in column.constraints or ()
                    if c.contype == ConstrType.CONSTR_DEFAULT]
        calls = {_function_name(n) for d in defaults for n in walk(d)
                 if isinstance(n, pg.FuncCall)}
        volatile = sorted(calls & VOLATILE_FUNCTIONS)
        type_name = column.typeName.names[-1].sval if column.typeName else ""
        if volatile:
            yield Hit(statement, f"ADD COLUMN {table}.{column.colname} with a default "
                                 f"calling {volatile[0]}() rewrites every row under an "
                                 "ACCESS EXCLUSIVE lock", table)
        elif type_name in SERIAL_TYPES:
            yield Hit(statement, f"ADD COLUMN {table}.{column.colname} {type_name} fills "
                                 "every row from a sequence: a rewrite under lock", table)


def _function_name(call: pg.FuncCall) -> str:
    return call.funcname[-1].sval


def _set_not_null(ctx: LintContext) -> Iterator[Hit]:
    return _column_commands(ctx, AlterTableType.AT_SetNotNull,
                            "SET NOT NULL on {column} scans the whole table under an "
                            "ACCESS EXCLUSIVE lock")


def _constraint_not_valid(ctx: LintContext) -> Iterator[Hit]:
    for statement, alter, cmd in alter_commands(ctx):
        constraint = cmd.def_
        if (cmd.subtype == AlterTableType.AT_AddConstraint
                and isinstance(constraint, pg.Constraint)
                and constraint.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK)
                and not constraint.skip_validation):
            kind = "FOREIGN KEY" if constraint.contype == ConstrType.CONSTR_FOREIGN else "CHECK"
            table = alter.relation.relname
            yield Hit(statement, f"ADD {kind} on {table} without NOT VALID checks every "
                                 "row while holding a lock that blocks writes", table)


def _rename(ctx: LintContext) -> Iterator[Hit]:
    for statement in ctx.statements:
        node = statement.node
        if isinstance(node, pg.RenameStmt) and node.renameType in (ObjectType.OBJECT_COLUMN,
                                                                   ObjectType.OBJECT_TABLE):
            what = (f"column {node.relation.relname}.{node.subname}"
                    if node.renameType == ObjectType.OBJECT_COLUMN
                    else f"table {node.relation.relname}")
            yield Hit(statement, f"renaming {what} breaks the code still running against "
                                 "the old name", node.relation.relname)


def _drop(ctx: LintContext) -> Iterator[Hit]:
    for statement in ctx.statements:
        node = statement.node
        if isinstance(node, pg.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
            for names in node.objects or ():
                table = names[-1].sval
                if table not in ctx.created_tables:
                    yield Hit(statement, f"DROP TABLE {table} deletes its data in every "
                                         "schema, and breaks code still reading it", table)
    for statement, alter, cmd in alter_commands(ctx):
        if cmd.subtype == AlterTableType.AT_DropColumn:
            table = alter.relation.relname
            yield Hit(statement, f"DROP COLUMN {table}.{cmd.name} deletes its data, and "
                                 "breaks code still reading it", table)


def _names_a_schema(ctx: LintContext) -> Iterator[Hit]:
    if not ctx.migration.scope.applies_to_tenants():
        return
    for statement in ctx.statements:
        for schema in _schemas_named(statement.node):
            yield Hit(statement, f"names schema {schema}: a tenant migration runs in each "
                                 "tenant's schema and must not reach outside it")
            break


def _schemas_named(node: pg.Node) -> Iterator[str]:
    """The schemas a statement names: qualified tables, types, functions, dropped
    objects, and a schema it creates."""
    for child in walk(node):
        if isinstance(child, pg.RangeVar | pg.CreateSchemaStmt):
            yield from _other(child.schemaname)
        elif isinstance(child, pg.FuncCall | pg.CreateFunctionStmt):
            yield from _qualifier(child.funcname)
        elif isinstance(child, pg.TypeName):
            yield from _qualifier(child.names)
        elif isinstance(child, pg.CreateEnumStmt):
            yield from _qualifier(child.typeName)
    if isinstance(node, pg.DropStmt):
        for names in node.objects or ():
            if isinstance(names, tuple):
                yield from _qualifier(names)


def _qualifier(names: tuple[pg.Node, ...] | None) -> Iterator[str]:
    """The schema of a qualified name (schema.name, as pglast's tuple of Strings)."""
    if names and len(names) > 1 and isinstance(names[0], pg.String):
        yield from _other(names[0].sval)


def _other(schema: str | None) -> Iterator[str]:
    if schema and schema not in SYSTEM_SCHEMAS:
        yield schema


def _search_path(ctx: LintContext) -> Iterator[Hit]:
    if not ctx.migration.scope.applies_to_tenants():
        return
    for statement in ctx.statements:
        for child in walk(statement.node):
            if isinstance(child, pg.VariableSetStmt) and child.name == "search_path":
                yield Hit(statement, "changes search_path: the tenant's schema is set for "
                                     "the migration, and this escapes it")
                break
            if (isinstance(child, pg.FuncCall) and _function_name(child) == "set_config"
                    and child.args and isinstance(child.args[0], pg.A_Const)
                    and getattr(child.args[0].val, "sval", None) == "search_path"):
                yield Hit(statement, "set_config('search_path', …) escapes the tenant's "
                                     "schema set for the migration")
                break


def _no_downgrade(ctx: LintContext) -> Iterator[Hit]:
    if not ctx.migration.can_downgrade():
        yield Hit(None, "no DOWNGRADE SQL: `archify rollback` cannot revert this migration")


BUILTIN_RULES: tuple[Rule, ...] = (
    Rule("index-not-concurrent", Severity.ERROR,
         "CREATE INDEX CONCURRENTLY in a migration with MIGRATION_TRANSACTION: false",
         _index_without_concurrently, stakes="locks"),
    Rule("concurrently-in-transaction", Severity.ERROR,
         "put the statement in its own migration with MIGRATION_TRANSACTION: false",
         _concurrently_in_transaction),
    Rule("column-type-change", Severity.ERROR,
         "add a new column, backfill it in batches, switch the code, then drop the old one",
         _column_type_change, stakes="rewrites"),
    Rule("volatile-default", Severity.ERROR,
         "add the column without a default (or with a constant one), then backfill "
         "in batches", _volatile_default, stakes="rewrites"),
    Rule("set-not-null", Severity.ERROR,
         "ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a "
         "later migration, then SET NOT NULL (PostgreSQL 12+ skips the scan)",
         _set_not_null, stakes="scans"),
    Rule("constraint-not-valid", Severity.ERROR,
         "ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT in a later migration",
         _constraint_not_valid, stakes="scans"),
    Rule("rename", Severity.WARNING,
         "add the new name beside the old one (a new column, or a view), move the code, "
         "then remove the old name", _rename),
    Rule("drop", Severity.WARNING,
         "stop using it in the code first, deploy, then drop it in a later migration",
         _drop, stakes="drops"),
    Rule("names-schema", Severity.ERROR,
         "write unqualified names: the runner sets search_path to the tenant's schema",
         _names_a_schema),
    Rule("search-path", Severity.ERROR,
         "leave search_path to the runner; write unqualified names", _search_path),
    Rule("no-downgrade", Severity.WARNING,
         "give the migration DOWNGRADE_SQL (or downgrade()) that reverts it", _no_downgrade),
)
# Findings the linter makes itself, not through a Rule's check.
SYNTAX_ERROR = Rule("syntax-error", Severity.ERROR,
                    "fix the SQL: PostgreSQL would refuse it", lambda ctx: ())
SILENCE_WITHOUT_REASON = Rule(
    "silence-without-reason", Severity.ERROR,
    "say why: -- archify: allow <rule> because <why>", lambda ctx: ())
