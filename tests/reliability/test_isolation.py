"""Security: a tenant migration sees its own schema only, and a rollout runs with a role
that owns the tenant schemas but not the database."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import asyncpg
import pytest

from archify_core import Engine, Outcome, TenantCreationError
from tests.fleet import add_migration, execute, fetchval, keep_only, register_tenants


@pytest.mark.parametrize("sql, reaches", [
    ("CREATE TABLE stolen AS SELECT * FROM secrets", "another tenant's table"),
    ("CREATE TABLE stolen AS SELECT * FROM tenants", "public.tenants"),
    ("DROP TABLE system_settings", "a public table"),
    ("UPDATE tenants SET name = 'pwned'", "public.tenants, to change it"),
    ("CREATE TABLE stolen AS SELECT helper() AS v", "a function in public"),
])
async def test_unqualified_names_never_leave_the_tenant_schema(
    dsn: str, migrations_dir: Path, sql: str, reaches: str
) -> None:
    keep_only(migrations_dir, "001", "002")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await register_tenants(dsn, ["alpha", "beta"])
        assert (await engine.migrate("tenants")).ok
    await execute(dsn, "CREATE TABLE tenant_beta.secrets (v text)",
               "INSERT INTO tenant_beta.secrets VALUES ('beta only')",
               "CREATE FUNCTION public.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    add_migration(migrations_dir, "003_probe", "tenant", sql)
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
    alpha = next(r for r in report.schemas if r.slug == "alpha")
    assert alpha.outcome is Outcome.FAILED, f"a tenant migration reached {reaches}"
    assert alpha.failure.sqlstate in {"42P01", "42883"}  # undefined table / function
    assert await fetchval(dsn, "SELECT count(*) FROM public.tenants WHERE name = 'pwned'") == 0
    assert await fetchval(dsn, "SELECT to_regclass('public.system_settings') IS NOT NULL")
    assert await fetchval(dsn, "SELECT to_regclass('tenant_alpha.stolen')") is None
    assert await fetchval(dsn, "SELECT to_regclass('public.stolen')") is None


async def test_search_path_is_the_tenant_alone_and_does_not_leak_into_the_pool(
    dsn: str, migrations_dir: Path
) -> None:
    keep_only(migrations_dir, "001", "002")
    add_migration(migrations_dir, "003_where_am_i", "tenant",
                  "CREATE TABLE where_am_i AS SELECT current_setting('search_path') AS path, "
                  "current_schemas(false)::text[] AS schemas")
    async with Engine(dsn, migrations_dir, concurrency=2, pool_size=3,
                      load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await register_tenants(dsn, ["alpha", "beta", "gamma"])
        assert (await engine.migrate("tenants")).ok
        async with engine.pool.acquire() as conn:  # the connections the rollout used
            assert await conn.fetchval("SHOW search_path") == '"$user", public'
            assert await conn.fetchval("SHOW lock_timeout") == "0"
    for slug in ("alpha", "beta", "gamma"):
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(f"SELECT * FROM tenant_{slug}.where_am_i")
        finally:
            await conn.close()
        assert row["path"].strip('"') == f"tenant_{slug}"  # the one schema, quoted or not
        assert row["schemas"] == [f"tenant_{slug}"]
    assert await fetchval(dsn, "SELECT to_regclass('public.where_am_i')") is None


def _as_role(dsn: str, role: str) -> str:
    """The same server and database, logged in as `role` (the suite's server trusts
    local connections, so no password is needed)."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


async def test_rollout_with_a_role_that_owns_only_the_tenant_schemas(
    dsn: str, migrations_dir: Path
) -> None:
    """docs/security.md: the migrating role owns tenant schemas, not the database."""
    role = f"migrator_{secrets.token_hex(3)}"
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok  # the database owner runs public ones
    database = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    await execute(
        dsn,
        f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON public.tenants TO {role}",
        f"CREATE SCHEMA tenant_alpha AUTHORIZATION {role}",
        f"CREATE SCHEMA tenant_beta AUTHORIZATION {role}",
        "CREATE SCHEMA tenant_foreign",  # owned by someone else
        "INSERT INTO public.tenants (slug, name, schema_name) VALUES "
        "('alpha', 'a', 'tenant_alpha'), ('beta', 'b', 'tenant_beta'), "
        "('foreign', 'f', 'tenant_foreign')",
    )
    try:
        async with Engine(_as_role(dsn, role), migrations_dir,
                          load_entry_points=False) as engine:
            report = await engine.migrate("tenants")
            with pytest.raises(TenantCreationError, match="permission denied"):
                await engine.create_tenant("gamma")
        outcomes = {r.schema: r.outcome for r in report.schemas}
        assert outcomes["tenant_alpha"] is Outcome.MIGRATED
        assert outcomes["tenant_beta"] is Outcome.MIGRATED
        [foreign] = report.failed
        assert foreign.schema == "tenant_foreign" and foreign.failure.sqlstate == "42501"
        assert "permission denied for schema tenant_foreign" in foreign.failure.message
        assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = "
                               "'tenant_gamma'") == 0

        # with CREATE on the database and INSERT on the registry it may create tenants too;
        # with SELECT on public's ledger it may run `all` and `status` (public up to date)
        await execute(dsn, f"GRANT SELECT ON public.schema_migrations TO {role}",
                   f'GRANT CREATE ON DATABASE "{database}" TO {role}',
                   f"GRANT INSERT ON public.tenants TO {role}",
                   f"GRANT USAGE ON SEQUENCE public.tenants_id_seq TO {role}")
        async with Engine(_as_role(dsn, role), migrations_dir,
                          load_entry_points=False) as engine:
            tenant = await engine.create_tenant("gamma")
            assert tenant.schema == "tenant_gamma"
            again = await engine.migrate("all")
            status = await engine.status()
        assert {r.schema: r.outcome for r in again.schemas}["public"] is Outcome.UP_TO_DATE
        assert [t.slug for t in status.tenants if t.pending] == ["foreign"]
        assert await fetchval(dsn, "SELECT nspowner::regrole::text FROM pg_namespace "
                               "WHERE nspname = 'tenant_gamma'") == role
    finally:
        await execute(dsn, f"DROP OWNED BY {role} CASCADE", f"DROP ROLE {role}")


async def test_a_role_without_read_access_gets_a_clear_error_not_a_traceback(
    dsn: str, migrations_dir: Path
) -> None:
    from tests.reliability.helpers import cli

    role = f"reader_{secrets.token_hex(3)}"
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
    database = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    await execute(dsn, f"CREATE ROLE {role} LOGIN",
               f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    try:
        for command in (["status"], ["all"], ["tenants"]):
            result = cli("--migrations", str(migrations_dir), *command,
                         dsn=_as_role(dsn, role))
            output = result.stdout + result.stderr
            assert result.returncode == 2, output
            assert "Traceback" not in output
            assert "permission denied" in output, output
    finally:
        await execute(dsn, f"DROP OWNED BY {role} CASCADE", f"DROP ROLE {role}")


def _doc_sql_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


async def test_the_security_doc_recipe_works(dsn: str, migrations_dir: Path) -> None:
    """Run docs/security.md's SQL as written (role names made unique): the migrator
    creates and migrates tenants, takes over an old schema, and the application role
    reads and writes data but cannot change the schema."""
    suffix = secrets.token_hex(3)
    migrator, app = f"migrator_{suffix}", f"app_rw_{suffix}"
    database = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await engine.create_tenant("legacy")  # created by the owner, handed over below
    grants, handover = (
        block.replace("migrator", migrator).replace("app_rw", app)
        .replace("DATABASE app", f'DATABASE "{database}"').replace(" PASSWORD '...'", "")
        for block in _doc_sql_blocks()[:2]
    )
    await execute(dsn, grants, handover)
    try:
        async with Engine(_as_role(dsn, migrator), migrations_dir,
                          load_entry_points=False) as engine:
            await engine.create_tenant("acme")
            add_migration(migrations_dir, "006_more", "tenant",
                          "ALTER TABLE users ADD COLUMN nickname text")
        async with Engine(_as_role(dsn, migrator), migrations_dir,
                          load_entry_points=False) as engine:
            report = await engine.migrate("tenants")
        assert report.ok, [r.failure for r in report.failed]
        assert report.applied_count() == 2  # 006 in acme and in the handed-over legacy
        conn = await asyncpg.connect(_as_role(dsn, app))
        try:
            await conn.execute("INSERT INTO tenant_acme.users (email) VALUES ('a@example.com')")
            assert await conn.fetchval("SELECT count(*) FROM tenant_acme.users") >= 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("ALTER TABLE tenant_acme.users ADD COLUMN x int")
        finally:
            await conn.close()
    finally:
        await execute(dsn, f"DROP OWNED BY {app}, {migrator} CASCADE",
                   f"DROP ROLE {app}", f"DROP ROLE {migrator}")
