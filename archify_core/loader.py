"""Loading migration files from a folder, validating the whole set first.

Loading never touches the database. Every defect of every file is collected
and raised together as one MigrationSetError, so a user fixes them in one go.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConfigurationError, MigrationDefect, MigrationSetError
from .migration import Migration, MigrationSet, Scope, sql_checksum

FILE_NAME = re.compile(r"^(?P<number>\d+)_(?P<name>[a-z0-9_]+)\.py$")
METADATA_LINE = re.compile(r"^\s*#\s*(?P<key>MIGRATION_[A-Z_]+)\s*:\s*(?P<value>.*?)\s*$")
REQUIRED_KEYS = ("MIGRATION_SCOPE", "MIGRATION_VERSION", "MIGRATION_DESCRIPTION")
KNOWN_KEYS = frozenset((*REQUIRED_KEYS, "MIGRATION_TRANSACTION"))
BOOLEANS = {"true": True, "yes": True, "false": False, "no": False}


class _Defective(Exception):
    """Internal: this file has defects; carries them out of the per-file loader."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems


def load_migrations(directory: str | Path) -> MigrationSet:
    """Load and validate every migration file in `directory`, in filename order.

    Raises MigrationSetError listing every defect found, or ConfigurationError
    when the folder itself is missing.
    """
    folder = Path(directory)
    if folder.is_file():
        raise ConfigurationError(
            f"--migrations {str(folder)!r} is a file, not a folder; pass the folder that holds "
            f"the migration files (e.g. --migrations {str(folder.parent)!r})"
        )
    if not folder.is_dir():
        raise ConfigurationError(
            f"migrations folder {str(folder)!r} does not exist; pass --migrations DIR "
            "or create it"
        )
    defects: list[MigrationDefect] = []
    migrations: list[Migration] = []
    for path in migration_files(folder):
        try:
            migrations.append(load_migration_file(path))
        except _Defective as bad:
            defects.extend(MigrationDefect(path, problem) for problem in bad.problems)
    defects.extend(_set_defects(migrations))
    if defects:
        raise MigrationSetError(defects)
    return MigrationSet(migrations, directory=folder)


def migration_files(folder: Path) -> list[Path]:
    """The candidate files: every *.py in the folder not starting with '_', sorted by name."""
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def load_migration_file(path: Path) -> Migration:
    """Load one file; raises _Defective with every problem found in it."""
    name_match = FILE_NAME.match(path.name)
    if name_match is None:
        raise _Defective(
            "file name must look like NNN_descriptive_name.py "
            "(digits, underscore, lowercase letters/digits/underscores)"
        )
    source = _read_source(path)
    metadata = _parse_metadata(path, source)
    problems = _metadata_problems(path, metadata)
    upgrade_py = downgrade_py = None  # a file that fails to import has neither
    unfinished = None
    try:
        module = _import(path)
        upgrade_py = _python_step(module, "upgrade")
        downgrade_py = _python_step(module, "downgrade")
        upgrade_sql = "" if upgrade_py else _sql_from(module, "upgrade", "UPGRADE_SQL",
                                                      required=True)
        if not upgrade_py and not _has_statement(upgrade_sql):
            unfinished = _unfinished(module, upgrade_sql)
        downgrade_sql = None if downgrade_py else _sql_from(module, "downgrade",
                                                            "DOWNGRADE_SQL", required=False)
    except _Defective as bad:
        problems.extend(bad.problems)
    transactional = BOOLEANS.get(metadata.get("MIGRATION_TRANSACTION", "true").lower())
    if transactional is None:
        problems.append("MIGRATION_TRANSACTION must be true or false")
    elif not transactional and (upgrade_py or downgrade_py):
        problems.append("a Python migration always runs in a transaction; "
                        "remove MIGRATION_TRANSACTION: false")
    if problems:
        raise _Defective(*problems)
    return Migration(
        version=metadata["MIGRATION_VERSION"],
        scope=Scope(metadata["MIGRATION_SCOPE"]),
        description=metadata["MIGRATION_DESCRIPTION"],
        path=path,
        upgrade_sql=upgrade_sql,
        downgrade_sql=downgrade_sql,
        # a Python migration's checksum covers its whole file
        checksum=sql_checksum(source) if upgrade_py else "",
        transactional=bool(transactional),
        upgrade_py=upgrade_py,
        downgrade_py=downgrade_py,
        unfinished=unfinished,
    )


def _python_step(module: ModuleType, name: str) -> Any:
    """`async def upgrade(conn)`: a step that gets an asyncpg connection, or None for
    the guide's SQL-returning functions."""
    func = getattr(module, name, None)
    if not inspect.iscoroutinefunction(func):
        return None
    if len(inspect.signature(func).parameters) != 1:
        raise _Defective(f"async def {name}() must take exactly one argument: the connection")
    return func


def _read_source(path: Path) -> str:
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Defective(f"not valid UTF-8 text (byte {exc.start})") from None
    if not source.strip():
        raise _Defective("file is empty")
    return source


def _parse_metadata(path: Path, source: str) -> dict[str, str]:
    """The `# MIGRATION_KEY: value` lines, from the module docstring (the guide's
    template) or from comment lines (the guide's prose shows both)."""
    try:
        ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise _Defective(f"Python syntax error at line {exc.lineno}: {exc.msg}") from None
    metadata: dict[str, str] = {}
    conflicts: list[str] = []
    for line in source.splitlines():
        found = METADATA_LINE.match(line)
        if found is None:
            continue
        key, value = found["key"], found["value"]
        if metadata.setdefault(key, value) != value:
            conflicts.append(f"metadata {key} is given twice with different values")
    if conflicts:
        raise _Defective(*conflicts)
    return metadata


def _metadata_problems(path: Path, metadata: dict[str, str]) -> list[str]:
    problems = [
        f"missing metadata line '# {key}: ...' in the module docstring"
        for key in REQUIRED_KEYS
        if not metadata.get(key)
    ]
    problems += [
        f"unknown metadata {key} (known: {', '.join(sorted(KNOWN_KEYS))})"
        for key in metadata
        if key not in KNOWN_KEYS
    ]
    scope = metadata.get("MIGRATION_SCOPE")
    if scope and scope not in Scope.__members__.values():
        problems.append(f"unknown MIGRATION_SCOPE {scope!r} (use public, tenant or both)")
    version = metadata.get("MIGRATION_VERSION")
    if version and version != path.stem:
        problems.append(
            f"MIGRATION_VERSION {version!r} does not match the file name; "
            f"it must be {path.stem!r}"
        )
    return problems


def _import(path: Path) -> ModuleType:
    module_name = f"archify_migrations.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the file's own code failed: report it, never
        # crash (a stray sys.exit() in a migration file must not end the runner silently)
        raise _Defective(f"failed to import: {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(module_name, None)
    return module


def _sql_from(module: ModuleType, func_name: str, const_name: str, *, required: bool) -> Any:
    func: Callable[[], object] | None = getattr(module, func_name, None)
    if callable(func):
        try:
            sql = func()
        except (Exception, SystemExit) as exc:
            raise _Defective(f"{func_name}() raised {type(exc).__name__}: {exc}") from None
        source = f"{func_name}()"
    else:
        sql = getattr(module, const_name, None)
        source = const_name
    if sql is None:
        if required:
            raise _Defective(f"no upgrade SQL: define {func_name}() or {const_name}")
        return None
    if not isinstance(sql, str):
        raise _Defective(f"{source} must be a SQL string, not {type(sql).__name__}")
    if not required and not _has_statement(sql):
        return None
    return sql


def _unfinished(module: ModuleType, sql: str) -> str:
    """Why a file whose upgrade SQL has no statement is not ready yet (a file just written
    by `archify new`, still holding its TODO): loaded, shown as pending, never applied."""
    source = "upgrade()" if callable(getattr(module, "upgrade", None)) else "UPGRADE_SQL"
    what = "is only its TODO placeholder" if "TODO" in sql else "is empty (or only comments)"
    return f"{source} {what}; write the change, or delete the file"


def _has_statement(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


def _set_defects(migrations: list[Migration]) -> list[MigrationDefect]:
    """Defects of the set as a whole: the same version or number twice."""
    defects: list[MigrationDefect] = []
    seen_numbers: dict[str, Path] = {}
    seen_versions: dict[str, Path] = {}
    for m in migrations:
        number = m.version.split("_", 1)[0]
        if m.version in seen_versions:
            defects.append(MigrationDefect(
                m.path, f"duplicate version {m.version!r} (also in {seen_versions[m.version].name})"
            ))
        elif number in seen_numbers:
            defects.append(MigrationDefect(
                m.path,
                f"duplicate number {number} (also used by {seen_numbers[number].name}); "
                "give each migration its own number",
            ))
        seen_versions.setdefault(m.version, m.path)
        seen_numbers.setdefault(number, m.path)
    return defects
