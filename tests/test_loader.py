"""Loading and validating migration files: pure, no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from archify_core import MigrationSetError, Scope, load_migrations
from archify_core.errors import ConfigurationError
from tests.conftest import EXAMPLE_MIGRATIONS
from tests.fleet import add_migration, write_file


def test_examples_load_in_filename_order() -> None:
    migrations = load_migrations(EXAMPLE_MIGRATIONS)
    assert [m.version for m in migrations] == [
        "001_create_public_tables", "002_create_tenant_tables", "003_add_user_avatar",
        "004_add_tenant_billing", "005_add_audit_logs",
    ]
    assert [m.scope for m in migrations] == [
        Scope.PUBLIC, Scope.TENANT, Scope.TENANT, Scope.PUBLIC, Scope.BOTH]
    assert [m.version for m in migrations.for_kind(Scope.TENANT)] == [
        "002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]
    assert "avatar_url" in migrations.get("003_add_user_avatar").upgrade_sql
    assert "DROP COLUMN" in migrations.get("003_add_user_avatar").downgrade_sql


def test_constants_without_functions_are_accepted(tmp_path: Path) -> None:
    add_migration(tmp_path, "001_only_constants", "tenant", "CREATE TABLE t (id int);")
    [m] = load_migrations(tmp_path)
    assert m.upgrade_sql == "CREATE TABLE t (id int);"
    assert m.downgrade_sql is None


def _defects(folder: Path) -> list[str]:
    with pytest.raises(MigrationSetError) as caught:
        load_migrations(folder)
    return [str(d) for d in caught.value.defects]


GOOD_HEAD = '"""\nx\n\n# MIGRATION_SCOPE: {scope}\n# MIGRATION_VERSION: {version}\n' \
            '# MIGRATION_DESCRIPTION: d\n"""\n'


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("001_a.py", '"""\n# MIGRATION_VERSION: 001_a\n# MIGRATION_DESCRIPTION: d\n"""\n'
     'UPGRADE_SQL = "SELECT 1"\n', "missing metadata line '# MIGRATION_SCOPE"),
    ("001_a.py", '"""\n# MIGRATION_SCOPE: tenant\n# MIGRATION_DESCRIPTION: d\n"""\n'
     'UPGRADE_SQL = "SELECT 1"\n', "missing metadata line '# MIGRATION_VERSION"),
    ("001_a.py", '"""\n# MIGRATION_SCOPE: tenant\n# MIGRATION_VERSION: 001_a\n"""\n'
     'UPGRADE_SQL = "SELECT 1"\n', "missing metadata line '# MIGRATION_DESCRIPTION"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="001_a")
     + '# MIGRATION_COLOUR: red\nUPGRADE_SQL = "SELECT 1"\n', None),
    ("001_a.py", GOOD_HEAD.format(scope="tenants", version="001_a")
     + 'UPGRADE_SQL = "SELECT 1"\n', "unknown MIGRATION_SCOPE 'tenants'"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="002_a")
     + 'UPGRADE_SQL = "SELECT 1"\n', "does not match the file name"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="001_a"),
     "no upgrade SQL"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="001_a")
     + 'import no_such_module_xyz\nUPGRADE_SQL = "SELECT 1"\n',
     "failed to import: ModuleNotFoundError"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="001_a")
     + 'def upgrade(:\n', "Python syntax error"),
    ("001_a.py", "", "file is empty"),
    ("001_a.py", b'"""\n# MIGRATION_SCOPE: tenant\n\xff\xfe"""\n', "not valid UTF-8"),
    ("1a-b.py", 'UPGRADE_SQL = "SELECT 1"\n', "file name must look like"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="001_a")
     + 'UPGRADE_SQL = 42\n', "must be a SQL string"),
    ("001_a.py", GOOD_HEAD.format(scope="tenant", version="001_a").replace(
        "d\n", "d\n# MIGRATION_TRANSACTION: false\n", 1)
     + 'import no_such_module_xyz\nUPGRADE_SQL = "SELECT 1"\n',
     "failed to import: ModuleNotFoundError"),
])
def test_each_defect_is_reported_with_the_file_name(
    tmp_path: Path, name: str, text: str | bytes, expected: str | None
) -> None:
    write_file(tmp_path, name, text)
    [defect] = _defects(tmp_path)
    assert defect.startswith(f"{name}: ")
    assert (expected or "unknown metadata MIGRATION_COLOUR") in defect


def test_every_defect_of_every_file_is_reported_together(tmp_path: Path) -> None:
    add_migration(tmp_path, "001_ok", "tenant", "SELECT 1")
    write_file(tmp_path, "002_bad.py", '"""\n# MIGRATION_SCOPE: nowhere\n"""\nUPGRADE_SQL = ""\n')
    write_file(tmp_path, "003_empty.py", "   \n")
    defects = _defects(tmp_path)
    assert any(d.startswith("002_bad.py: unknown MIGRATION_SCOPE") for d in defects)
    missing_version = "002_bad.py: missing metadata line '# MIGRATION_VERSION"
    assert any(d.startswith(missing_version) for d in defects)
    assert "003_empty.py: file is empty" in defects
    assert not any(d.startswith("001_ok.py") for d in defects)


@pytest.mark.parametrize(("body", "reason"), [
    ('UPGRADE_SQL = "   "\n', "UPGRADE_SQL is empty (or only comments)"),
    ('UPGRADE_SQL = "-- TODO: write the upgrade"\n', "UPGRADE_SQL is only its TODO placeholder"),
    ('def upgrade():\n    return ""\n', "upgrade() is empty (or only comments)"),
])
def test_a_file_without_a_statement_is_loaded_as_unfinished(
    tmp_path: Path, body: str, reason: str
) -> None:
    add_migration(tmp_path, "001_ok", "tenant", "SELECT 1")
    write_file(tmp_path, "002_wip.py", GOOD_HEAD.format(scope="tenant", version="002_wip") + body)
    migrations = load_migrations(tmp_path)
    [wip] = migrations.unfinished(Scope.TENANT)
    assert wip.version == "002_wip"
    assert wip.unfinished is not None and wip.unfinished.startswith(reason)
    assert migrations.unfinished(Scope.PUBLIC) == []


def test_duplicate_numbers_are_rejected(tmp_path: Path) -> None:
    add_migration(tmp_path, "003_first", "tenant", "SELECT 1")
    add_migration(tmp_path, "003_second", "tenant", "SELECT 2")
    [defect] = _defects(tmp_path)
    assert defect.startswith("003_second.py: duplicate number 003")
    assert "003_first.py" in defect


def test_a_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_migrations(tmp_path / "nope")


def test_private_files_are_ignored(tmp_path: Path) -> None:
    add_migration(tmp_path, "001_a", "public", "SELECT 1")
    write_file(tmp_path, "__init__.py", "")
    write_file(tmp_path, "_helpers.py", "X = 1\n")
    assert [m.version for m in load_migrations(tmp_path)] == ["001_a"]
