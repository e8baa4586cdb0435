"""Rollback, drift detection, validate, dry runs, drop-tenant and `archify new`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from archify_core import (
    ConfigurationError,
    Engine,
    Outcome,
    Scope,
    load_migrations,
)
from tests.fleet import (
    add_migration,
    column_exists,
    fetchval,
    ledger_versions,
    migrated_fleet,
)
from tests.test_cli import archify

TENANT_VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]


async def test_rollback_steps_for_one_tenant(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    async with Engine(dsn, migrations_dir) as engine:
        report = await engine.rollback(["acme"], steps=2)
    assert report.ok
    [result] = report.schemas
    assert result.outcome is Outcome.ROLLED_BACK
    assert [m.version for m in result.applied] == ["005_add_audit_logs", "003_add_user_avatar"]
    assert await ledger_versions(dsn, "tenant_acme") == ["002_create_tenant_tables"]
    assert not await column_exists(dsn, "tenant_acme", "users", "avatar_url")
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.audit_logs')") is None
    assert await ledger_versions(dsn, "tenant_corp") == TENANT_VERSIONS  # untouched


async def test_rollback_to_a_version_for_the_fleet_then_forward_again(
    dsn: str, migrations_dir: Path
) -> None:
    slugs = [f"t{i:02d}" for i in range(12)]
    await migrated_fleet(dsn, migrations_dir, slugs)
    async with Engine(dsn, migrations_dir, concurrency=4) as engine:
        report = await engine.rollback("tenants", to="002_create_tenant_tables")
        assert report.ok and report.count(Outcome.ROLLED_BACK) == 12
        for slug in slugs:
            assert await ledger_versions(dsn, f"tenant_{slug}") == ["002_create_tenant_tables"]
        again = await engine.rollback("tenants", to="002_create_tenant_tables")
        assert again.ok and again.count(Outcome.UP_TO_DATE) == 12
        forward = await engine.migrate("tenants")
    assert forward.ok and forward.applied_count() == 24
    assert await column_exists(dsn, "tenant_t07", "users", "avatar_url")


async def test_rollback_of_public(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        report = await engine.rollback("public", steps=1)
    assert [m.version for m in report.schemas[0].applied] == ["005_add_audit_logs"]
    assert await fetchval(dsn, "SELECT to_regclass('public.audit_logs')") is None
    assert await ledger_versions(dsn, "public") == [
        "001_create_public_tables", "004_add_tenant_billing"]


async def test_missing_downgrade_stops_that_schema_before_anything_runs(
    dsn: str, migrations_dir: Path
) -> None:
    add_migration(migrations_dir, "006_one_way", "tenant", "CREATE TABLE one_way (id int);")
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    async with Engine(dsn, migrations_dir) as engine:
        report = await engine.rollback(["acme"], steps=2)
    [result] = report.schemas
    assert result.outcome is Outcome.FAILED
    assert "006_one_way has no downgrade SQL" in result.failure.message
    assert await ledger_versions(dsn, "tenant_acme") == [*TENANT_VERSIONS, "006_one_way"]
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.audit_logs')") is not None


async def test_rollback_arguments_are_checked(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        with pytest.raises(ConfigurationError, match="exactly one"):
            await engine.rollback("tenants")
        with pytest.raises(ConfigurationError, match="no migration file"):
            await engine.rollback("tenants", to="999_nope")


async def test_drift_is_reported_by_status_and_validate(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    avatar = migrations_dir / "003_add_user_avatar.py"
    avatar.write_text(avatar.read_text().replace("VARCHAR(500)", "VARCHAR(900)"))
    (migrations_dir / "005_add_audit_logs.py").unlink()
    async with Engine(dsn, migrations_dir) as engine:
        status = await engine.status()
        problems = await engine.validate()
    acme = status.tenants[0]
    assert acme.drift.edited == ("003_add_user_avatar",)
    assert acme.drift.missing_files == ("005_add_audit_logs",)
    assert "tenant_acme: 003_add_user_avatar was edited after it was applied" in "\n".join(problems)
    assert "public: 005_add_audit_logs is applied but no migration file has it" in problems

    result = archify("validate", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 1
    assert "✗ tenant_acme: 003_add_user_avatar was edited" in result.stdout
    shown = json.loads(archify("status", "--json", dsn=dsn, migrations=migrations_dir).stdout)
    assert shown["tenants"][0]["drift"]["edited"] == ["003_add_user_avatar"]


async def test_validate_passes_on_a_clean_fleet(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    result = archify("validate", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no drift" in result.stdout


async def test_dry_runs_change_nothing_and_show_the_sql(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    down = archify("rollback", "--tenant", "acme", "--steps", "1", "--dry-run",
                   dsn=dsn, migrations=migrations_dir)
    assert down.returncode == 0, down.stderr
    assert "Rolling back acme (dry run)..." in down.stdout
    assert "Planning" not in down.stdout
    assert "↩ would revert 005_add_audit_logs" in down.stdout and "DROP TABLE IF EXISTS audit_logs" in down.stdout
    assert await ledger_versions(dsn, "tenant_acme") == TENANT_VERSIONS

    add_migration(migrations_dir, "006_more", "tenant", "CREATE TABLE more (id int);")
    up = archify("tenants", "--dry-run", dsn=dsn, migrations=migrations_dir)
    assert "→ 006_more" in up.stdout and "CREATE TABLE more" in up.stdout
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.more')") is None

    create = archify("create-tenant", "newco", "--name", "New'Co", "--dry-run", dsn=dsn,
                     migrations=migrations_dir)
    assert create.returncode == 0 and 'CREATE SCHEMA "tenant_newco"' in create.stdout
    registration = ("INSERT INTO public.tenants (slug, name, schema_name) VALUES "
                    "('newco', 'New''Co', 'tenant_newco');")
    assert (create.stdout.index("BEGIN;") < create.stdout.index("CREATE SCHEMA")
            < create.stdout.index("CREATE TABLE more") < create.stdout.index("archify_seed_admin")
            < create.stdout.index(registration) < create.stdout.index("COMMIT;"))
    drop = archify("drop-tenant", "acme", "--dry-run", dsn=dsn, migrations=migrations_dir)
    assert drop.returncode == 0 and 'DROP SCHEMA "tenant_acme" CASCADE' in drop.stdout
    assert drop.stdout.index("BEGIN;") < drop.stdout.index("DROP SCHEMA") < drop.stdout.index(
        "COMMIT;")
    assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant_%'") == 1
    assert await fetchval(dsn, "SELECT count(*) FROM public.tenants") == 1


async def test_drop_tenant_and_list(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    listed = json.loads(archify("tenants-list", "--json", dsn=dsn, migrations=migrations_dir).stdout)
    assert [t["slug"] for t in listed] == ["acme", "corp"]

    refused = archify("drop-tenant", "acme", dsn=dsn, migrations=migrations_dir)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'") == 1

    dropped = archify("drop-tenant", "acme", "--yes", dsn=dsn, migrations=migrations_dir)
    assert dropped.returncode == 0, dropped.stderr
    assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'") == 0
    assert await fetchval(dsn, "SELECT array_agg(slug) FROM public.tenants") == ["corp"]
    again = archify("drop-tenant", "acme", "--yes", dsn=dsn, migrations=migrations_dir)
    assert again.returncode == 2 and "does not exist" in again.stderr


async def test_new_writes_the_next_numbered_file(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    result = archify("new", "Add user nickname", "--scope", "tenant", migrations=migrations_dir)
    assert result.returncode == 0, result.stderr
    path = migrations_dir / "006_add_user_nickname.py"
    assert path.exists()
    # The template's TODO-only SQL is loaded as unfinished: shown, never applied...
    [wip] = load_migrations(migrations_dir).unfinished(Scope.TENANT)
    assert wip.version == "006_add_user_nickname"
    status = archify("status", dsn=dsn, migrations=migrations_dir)
    assert status.returncode == 0, status.stderr
    assert "⏳ 006_add_user_nickname (unfinished" in status.stdout
    refused = archify("all", dsn=dsn, migrations=migrations_dir)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("archify: error: 006_add_user_nickname.py is unfinished")
    assert await ledger_versions(dsn, "tenant_acme") == TENANT_VERSIONS
    listed = archify("tenants-list", dsn=dsn, migrations=migrations_dir)
    assert listed.returncode == 0 and "acme" in listed.stdout
    validated = archify("validate", dsn=dsn, migrations=migrations_dir)
    assert "006_add_user_nickname.py is unfinished" in validated.stdout + validated.stderr
    # ...until it is filled in
    path.write_text(path.read_text().replace(
        "-- TODO: the change, e.g. ", "").replace("-- TODO: the exact reverse, e.g. ", ""))
    new = load_migrations(migrations_dir).get("006_add_user_nickname")
    assert new is not None and new.scope.value == "tenant" and "nickname" in new.upgrade_sql
    bad = archify("new", "!!!", "--scope", "tenant", migrations=migrations_dir)
    assert bad.returncode == 2
    quoted = archify("new", "x", "--scope", "tenant", "--description", "a" + '"' * 3 + "b",
                     migrations=migrations_dir)
    assert quoted.returncode == 2 and "triple quotes" in quoted.stderr
    unwritable = archify("new", "x", "--scope", "tenant",
                         migrations=path / "not_a_folder")  # under a file, not a folder
    assert unwritable.returncode == 2 and "cannot write a migration" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr
    written = sorted(name for name in os.listdir(migrations_dir) if name.startswith("006_"))
    assert written == ["006_add_user_nickname.py"]
