"""Broken migration sets: every defect is reported with its file, nothing is applied,
and the CLI exits 2 without a traceback. SQL errors name the migration and schema.
Out-of-order files say what to do."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from archify_core import Engine, MigrationSetError, Outcome, load_migrations
from tests.conftest import EXAMPLE_MIGRATIONS
from tests.fleet import add_migration, keep_only, write_file
from tests.reliability.helpers import assert_clean_error, cli

HEADER = '"""\nx\n\n# MIGRATION_SCOPE: {scope}\n# MIGRATION_VERSION: {version}\n' \
         '# MIGRATION_DESCRIPTION: d\n"""\n'


def _valid(version: str, scope: str = "tenant", body: str = "UPGRADE_SQL = 'SELECT 1'") -> str:
    return HEADER.format(scope=scope, version=version) + body + "\n"


# name -> (how to break the copy of the example set, what the error must say)
DEFECTS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "duplicate version": (
        lambda f: write_file(f, "006_dup.py", _valid("005_add_audit_logs")),
        ["006_dup.py", "does not match the file name"]),
    "duplicate number": (
        lambda f: write_file(f, "005_other.py", _valid("005_other")),
        ["005_other.py", "duplicate number 005"]),
    "missing metadata": (
        lambda f: write_file(f, "006_nometa.py", "UPGRADE_SQL = 'SELECT 1'\n"),
        ["006_nometa.py", "missing metadata line '# MIGRATION_SCOPE"]),
    "bad scope": (
        lambda f: write_file(f, "006_scope.py", _valid("006_scope", scope="everywhere")),
        ["006_scope.py", "unknown MIGRATION_SCOPE 'everywhere'"]),
    "import error": (
        lambda f: write_file(f, "006_imp.py", _valid("006_imp", body="import no_such_module_xyz")),
        ["006_imp.py", "failed to import: ModuleNotFoundError"]),
    "sys.exit() at import": (
        lambda f: write_file(f, "006_exit.py", _valid("006_exit", body="raise SystemExit(3)")),
        ["006_exit.py", "failed to import: SystemExit"]),
    "runtime error in upgrade()": (
        lambda f: write_file(f, "006_raise.py", _valid(
            "006_raise", body="def upgrade():\n    return 1 / 0")),
        ["006_raise.py", "upgrade() raised ZeroDivisionError"]),
    "python syntax error": (
        lambda f: write_file(f, "006_syntax.py", _valid("006_syntax", body="UPGRADE_SQL = 'x' +")),
        ["006_syntax.py", "Python syntax error at line"]),
    "empty file": (
        lambda f: write_file(f, "006_empty.py", ""),
        ["006_empty.py", "file is empty"]),
    "SQL not a string": (
        lambda f: write_file(f, "006_int.py", _valid("006_int", body="UPGRADE_SQL = 42")),
        ["006_int.py", "must be a SQL string"]),
    "non-UTF-8 file": (
        lambda f: write_file(f, "006_latin1.py", _valid("006_latin1").encode() + b"# caf\xe9\n"),
        ["006_latin1.py", "not valid UTF-8"]),
    "NUL byte": (
        lambda f: write_file(f, "006_nul.py", _valid("006_nul") + "\x00\n"),
        ["006_nul.py"]),
    "bad file name": (
        lambda f: write_file(f, "6-Bad Name.py", _valid("6-Bad Name")),
        ["6-Bad Name.py", "file name must look like"]),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_defective_set_is_reported_by_file_and_nothing_runs(
    dsn: str, migrations_dir: Path, defect: str
) -> None:
    breaker, needles = DEFECTS[defect]
    breaker(migrations_dir)
    with pytest.raises(MigrationSetError) as caught:
        load_migrations(migrations_dir)
    text = str(caught.value)
    assert "nothing was applied" in text
    for needle in needles:
        assert needle in text, (needle, text)

    result = cli("--migrations", str(migrations_dir), "all", dsn=dsn)
    assert_clean_error(result, *needles)
    import anyio

    assert anyio.run(_table_count, dsn) == 0  # the database was not touched


async def _table_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
            "'information_schema')")
    finally:
        await conn.close()


def test_every_defect_at_once_is_listed_together(migrations_dir: Path) -> None:
    for breaker, _ in DEFECTS.values():
        breaker(migrations_dir)
    with pytest.raises(MigrationSetError) as caught:
        load_migrations(migrations_dir)
    text = str(caught.value)
    for _, needles in DEFECTS.values():
        for needle in needles:
            assert needle in text, (needle, text)


def test_an_unfinished_file_is_refused_by_name_and_nothing_runs(
    dsn: str, migrations_dir: Path
) -> None:
    write_file(migrations_dir, "006_blank.py", _valid("006_blank", body="UPGRADE_SQL = '  '"))
    result = cli("--migrations", str(migrations_dir), "all", dsn=dsn)
    assert_clean_error(result, "006_blank.py", "unfinished")
    import anyio

    assert anyio.run(_table_count, dsn) == 0  # the database was not touched


def test_missing_folder_is_exit_2(dsn: str, tmp_path: Path) -> None:
    result = cli("--migrations", str(tmp_path / "nope"), "all", dsn=dsn)
    assert_clean_error(result, "does not exist")


async def test_sql_error_names_migration_and_schema_and_applies_nothing_of_it(
    dsn: str, migrations_dir: Path
) -> None:
    add_migration(migrations_dir, "006_broken_sql", "tenant",
                  "CREATE TABLE half_done (id int);\nALTER TABLE users ADD COLUMN oops;")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await engine.create_tenant("acme", migrate=False)
        await engine.create_tenant("corp", migrate=False)
    result = cli("--migrations", str(migrations_dir), "tenants", "--json", dsn=dsn)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    import json

    report = json.loads(result.stdout)
    failed = {s["schema"]: s["failure"] for s in report["schemas"] if s["outcome"] == "failed"}
    assert set(failed) == {"tenant_acme", "tenant_corp"}
    for failure in failed.values():
        assert failure["version"] == "006_broken_sql"
        assert failure["sqlstate"] == "42601"
        assert "syntax error" in failure["message"]
    human = cli("--migrations", str(migrations_dir), "tenants", dsn=dsn)
    assert human.returncode == 1
    text = human.stdout + human.stderr
    assert "006_broken_sql" in text and "tenant_acme" in text and "Traceback" not in text
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = "
                                   "'half_done'") == 0
        assert await conn.fetchval("SELECT max(version) FROM tenant_acme.schema_migrations") \
            == "005_add_audit_logs"
    finally:
        await conn.close()


async def test_out_of_order_file_says_what_to_do(dsn: str, migrations_dir: Path) -> None:
    keep_only(migrations_dir, "001", "002", "005")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await engine.create_tenant("acme")
    shutil.copy(EXAMPLE_MIGRATIONS / "003_add_user_avatar.py", migrations_dir)
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
        status = await engine.status()
    [failed] = report.failed
    assert "003_add_user_avatar is older than 005_add_audit_logs" in failed.failure.message
    assert "renumber the new file" in failed.failure.message
    assert "--allow-out-of-order" in failed.failure.message
    assert status.tenants[0].drift.out_of_order == ("003_add_user_avatar",)
    result = cli("--migrations", str(migrations_dir), "tenants", dsn=dsn)
    assert result.returncode == 1 and "renumber" in result.stdout + result.stderr
    async with Engine(dsn, migrations_dir, allow_out_of_order=True,
                      load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
    assert report.ok and report.schemas[0].outcome is Outcome.MIGRATED


async def test_gap_in_numbers_is_fine_and_a_deleted_applied_file_shows_as_drift(
    dsn: str, migrations_dir: Path
) -> None:
    keep_only(migrations_dir, "001", "002", "005")  # 003 and 004 never existed: a gap
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await engine.create_tenant("acme")
        assert (await engine.migrate("all")).ok
    (migrations_dir / "005_add_audit_logs.py").unlink()  # applied, then its file vanished
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        status = await engine.status()
        report = await engine.migrate("all")
    assert status.tenants[0].drift.missing_files == ("005_add_audit_logs",)
    assert status.public.drift.missing_files == ("005_add_audit_logs",)
    assert report.ok and report.applied_count() == 0  # nothing is undone or re-run
