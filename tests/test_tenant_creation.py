"""create_tenant: one unit, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from archify_core import (
    ConfigurationError,
    Engine,
    InvalidSlugError,
    RegistryMissingError,
    TenantCreationError,
    TenantExistsError,
    hookimpl,
)
from tests.fleet import add_migration, fetchval, ledger_versions

TENANT_VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]


async def _nothing_left(dsn: str, slug: str) -> bool:
    schema = await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                            f"tenant_{slug}")
    row = await fetchval(dsn, "SELECT count(*) FROM public.tenants WHERE slug = $1", slug)
    return schema == 0 and row == 0


async def test_create_tenant_is_complete(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        tenant = await engine.create_tenant("acme", "Acme Inc", admin_email="boss@acme.io")
        status = await engine.status(["acme"])
    assert (tenant.slug, tenant.schema, tenant.name) == ("acme", "tenant_acme", "Acme Inc")
    assert await ledger_versions(dsn, "tenant_acme") == TENANT_VERSIONS
    assert status.tenants[0].pending == ()
    assert await fetchval(dsn, "SELECT name FROM public.tenants WHERE slug = 'acme'") == "Acme Inc"
    assert await fetchval(
        dsn, "SELECT is_admin FROM tenant_acme.users WHERE email = 'boss@acme.io'") is True


async def test_failing_migration_leaves_nothing(dsn: str, migrations_dir: Path) -> None:
    add_migration(migrations_dir, "006_explodes", "tenant", "CREATE TABLE ok (id int);\nSELEC 1;")
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        with pytest.raises(TenantCreationError, match="migration 006_explodes") as caught:
            await engine.create_tenant("acme")
    assert "nothing was created" in str(caught.value)
    assert await _nothing_left(dsn, "acme")


async def test_failing_seed_hook_leaves_nothing(dsn: str, migrations_dir: Path) -> None:
    class Boom:
        @hookimpl
        async def archify_seed_admin(self, conn: object, slug: str) -> None:
            await conn.execute("INSERT INTO users (email) VALUES ('first@x.io')")  # type: ignore[attr-defined]
            raise RuntimeError("mail server down")

    async with Engine(dsn, migrations_dir, plugins=[Boom()]) as engine:
        await engine.migrate("public")
        with pytest.raises(TenantCreationError, match="seed_admin hook.*mail server down"):
            await engine.create_tenant("acme", admin_email="a@b.io")
    assert await _nothing_left(dsn, "acme")


async def test_existing_tenant_and_bad_slugs(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        with pytest.raises(RegistryMissingError):
            await engine.create_tenant("early")
        await engine.migrate("public")
        await engine.create_tenant("acme")
        with pytest.raises(TenantExistsError, match="tenant_acme"):
            await engine.create_tenant("acme")
        await fetchval(dsn, "DELETE FROM public.tenants")
        with pytest.raises(TenantExistsError):  # the schema alone is enough to refuse
            await engine.create_tenant("acme")
        await fetchval(dsn, "CREATE SCHEMA tenant_ghost")
        await fetchval(dsn, "DROP SCHEMA tenant_acme CASCADE")
        for slug in ("Acme", "a b", "x;drop", "é", "1st", "a" * 57):
            with pytest.raises(InvalidSlugError):
                await engine.create_tenant(slug)
    assert await fetchval(dsn, "SELECT count(*) FROM public.tenants") == 0
    assert await fetchval(
        dsn, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant_%'") == 1  # ghost


async def test_a_name_the_registry_cannot_hold_is_refused_before_anything_runs(
    dsn: str, migrations_dir: Path
) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        with pytest.raises(ConfigurationError, match="name of tenant 'acme' contains a NUL"):
            await engine.create_tenant("acme", "Acme\x00Inc")
        tenant = await engine.create_tenant("corp", "Corp's; DROP TABLE tenants;--")
    assert await _nothing_left(dsn, "acme")
    assert tenant.name == "Corp's; DROP TABLE tenants;--"
    assert await fetchval(dsn, "SELECT name FROM public.tenants WHERE slug = 'corp'") == tenant.name


async def test_register_only_then_rollout(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await engine.create_tenant("later", migrate=False)
        assert await ledger_versions(dsn, "tenant_later") == []
        report = await engine.migrate(["later"])
    assert [m.version for m in report.schemas[0].applied] == TENANT_VERSIONS


async def test_failure_at_the_registry_step_leaves_no_schema(dsn: str, migrations_dir: Path) -> None:
    """The last step fails (a stale registry row holds the slug): the schema, its ledger and
    every migrated table made before it are rolled back too."""
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await fetchval(dsn, "INSERT INTO public.tenants (slug, name, schema_name) "
                            "VALUES ('acme', 'stale', 'tenant_acme')")
        with pytest.raises(TenantExistsError, match="already registered"):
            await engine.create_tenant("acme")
    assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'") == 0
    assert await fetchval(dsn, "SELECT name FROM public.tenants WHERE slug = 'acme'") == "stale"


async def test_drop_tenant_on_a_registry_without_a_name_column(
    dsn: str, migrations_dir: Path
) -> None:
    """Registries adopted from older tools may lack `name`: creating and dropping work."""
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await fetchval(dsn, "ALTER TABLE public.tenants DROP COLUMN name")
        await engine.create_tenant("oldco")
        assert await fetchval(dsn, "SELECT count(*) FROM public.tenants") == 1
        dropped = await engine.drop_tenant("oldco")
    assert dropped.slug == "oldco" and dropped.name is None
    assert await fetchval(dsn, "SELECT count(*) FROM public.tenants") == 0
    assert await fetchval(dsn, "SELECT to_regnamespace('tenant_oldco')") is None
