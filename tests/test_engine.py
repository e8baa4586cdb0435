"""The engine against a real PostgreSQL: rollouts, isolation, idempotence, concurrency."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import pytest

from archify_core import (
    ConfigurationError,
    Engine,
    Outcome,
    RegistryMissingError,
    TenantNotFoundError,
)
from archify_core.events import SchemaFinished
from tests.fleet import (
    add_migration,
    column_exists,
    execute,
    fetchval,
    keep_only,
    ledger_versions,
    on_every_pooled_connection,
    register_tenants,
)

TENANT_VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]
PUBLIC_VERSIONS = ["001_create_public_tables", "004_add_tenant_billing", "005_add_audit_logs"]


async def test_guide_status_example_end_to_end(dsn: str, migrations_dir: Path) -> None:
    """acme and corp have 002 and miss 003; startup has nothing: as in the guide."""
    keep_only(migrations_dir, "001", "002")
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await engine.create_tenant("acme", "Acme", migrate=False)
        await engine.create_tenant("corp", "Corp", migrate=False)
        assert (await engine.migrate("all")).ok
        await engine.create_tenant("startup", "Startup", migrate=False)
    (migrations_dir / "003_add_user_avatar.py").write_text(
        (Path(__file__).parent.parent / "migrations" / "003_add_user_avatar.py").read_text())

    async with Engine(dsn, migrations_dir) as engine:
        status = (await engine.status()).to_dict()
        assert status["public"] == {"applied": ["001_create_public_tables"], "pending": []}
        assert status["tenants"] == [
            {"slug": "acme", "schema": "tenant_acme", "applied": ["002_create_tenant_tables"],
             "pending": ["003_add_user_avatar"]},
            {"slug": "corp", "schema": "tenant_corp", "applied": ["002_create_tenant_tables"],
             "pending": ["003_add_user_avatar"]},
            {"slug": "startup", "schema": "tenant_startup", "applied": [],
             "pending": ["002_create_tenant_tables", "003_add_user_avatar"]},
        ]
        report = await engine.migrate("tenants")
    assert report.ok
    applied = {r.slug: [m.version for m in r.applied] for r in report.schemas}
    assert applied == {"acme": ["003_add_user_avatar"], "corp": ["003_add_user_avatar"],
                       "startup": ["002_create_tenant_tables", "003_add_user_avatar"]}
    for slug in ("acme", "corp", "startup"):
        assert await column_exists(dsn, f"tenant_{slug}", "users", "avatar_url")
        assert await ledger_versions(dsn, f"tenant_{slug}") == [
            "002_create_tenant_tables", "003_add_user_avatar"]


async def test_failure_stops_only_that_schema_and_leaves_nothing_half_applied(
    dsn: str, migrations_dir: Path
) -> None:
    # 006 creates a table then fails on one tenant only (it has no `legacy` table).
    add_migration(migrations_dir, "006_copy_legacy", "tenant",
                  "CREATE TABLE archive (id int); INSERT INTO archive SELECT id FROM legacy;")
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["good1", "bad", "good2"])
        for slug in ("good1", "good2"):
            await fetchval(dsn, f"CREATE TABLE tenant_{slug}.legacy (id int)")
        report = await engine.migrate("tenants")

    assert not report.ok
    [failed] = report.failed
    assert failed.slug == "bad"
    assert failed.failure.version == "006_copy_legacy"
    assert failed.failure.sqlstate == "42P01"
    assert 'relation "legacy" does not exist' in failed.failure.message
    assert [m.version for m in failed.applied] == TENANT_VERSIONS  # 002..005 went in
    assert await ledger_versions(dsn, "tenant_bad") == TENANT_VERSIONS
    assert await fetchval(dsn, "SELECT to_regclass('tenant_bad.archive')") is None
    for slug in ("good1", "good2"):
        assert await ledger_versions(dsn, f"tenant_{slug}") == [*TENANT_VERSIONS, "006_copy_legacy"]
        assert await fetchval(dsn, f"SELECT to_regclass('tenant_{slug}.archive')") is not None

    # Fix the cause and re-run: only the failed migration runs, once.
    await fetchval(dsn, "CREATE TABLE tenant_bad.legacy (id int)")
    async with Engine(dsn, migrations_dir) as engine:
        rerun = await engine.migrate("all")
    assert rerun.ok
    assert {r.slug: [m.version for m in r.applied] for r in rerun.schemas if r.applied} == {
        "bad": ["006_copy_legacy"]}


async def test_rerun_is_idempotent(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["a", "b"])
        first = await engine.migrate("all")
        second = await engine.migrate("all")
    assert first.applied_count() == 6
    assert second.ok and second.applied_count() == 0
    assert {r.outcome for r in second.schemas} == {Outcome.UP_TO_DATE}
    assert await ledger_versions(dsn, "public") == PUBLIC_VERSIONS
    assert await ledger_versions(dsn, "tenant_a") == TENANT_VERSIONS


async def test_two_engines_at_once_apply_each_migration_exactly_once(
    dsn: str, migrations_dir: Path
) -> None:
    # A non-idempotent migration: applying it twice would add two rows.
    add_migration(migrations_dir, "006_count_runs", "both",
                  "CREATE TABLE IF NOT EXISTS runs (n int); INSERT INTO runs VALUES (1);"
                  "SELECT pg_sleep(0.002);")
    slugs = [f"t{i:03d}" for i in range(60)]
    async with Engine(dsn, migrations_dir) as setup:
        await setup.migrate("public")
    await register_tenants(dsn, slugs)

    reports = []

    async def run_one() -> None:
        async with Engine(dsn, migrations_dir, concurrency=6) as engine:
            reports.append(await engine.migrate("all"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_one)
        tg.start_soon(run_one)
    assert all(r.ok for r in reports)
    applied = sum(r.applied_count() for r in reports)
    assert applied == len(slugs) * 4  # 002, 003, 005, 006 per tenant, once across both
    conn = await asyncpg.connect(dsn)
    try:
        for slug in slugs:
            assert await conn.fetchval(f"SELECT count(*) FROM tenant_{slug}.runs") == 1
            assert await conn.fetchval(
                f"SELECT count(*) FROM tenant_{slug}.schema_migrations") == 4
        assert await conn.fetchval("SELECT count(*) FROM public.runs") == 1  # setup applied it
    finally:
        await conn.close()


async def test_search_path_never_falls_through_to_public(dsn: str, migrations_dir: Path) -> None:
    """A tenant migration naming a table that exists only in public must fail, not touch public."""
    add_migration(migrations_dir, "006_touch_settings", "tenant",
                  "INSERT INTO system_settings (key, value) VALUES ('leak', 'x');")
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["acme"])
        report = await engine.migrate("tenants")
    [result] = report.schemas
    assert result.outcome is Outcome.FAILED
    assert result.failure.sqlstate == "42P01"  # undefined_table: public is not on the path
    assert await fetchval(dsn, "SELECT count(*) FROM public.system_settings") == 0
    # and tables created by tenant migrations land in the tenant schema, never in public
    assert await fetchval(dsn, "SELECT to_regclass('public.users')") is None
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.users')") is not None


async def test_a_thousand_tenants_with_concurrency_16(dsn: str, migrations_dir: Path) -> None:
    slugs = [f"t{i:04d}" for i in range(1000)]
    finished: list[str] = []

    def on_event(event: object) -> None:
        if isinstance(event, SchemaFinished):
            finished.append(event.result.schema)

    async with Engine(dsn, migrations_dir, concurrency=16, on_event=on_event) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, slugs)
        report = await engine.migrate("tenants")
        status = await engine.status()
    assert report.ok and report.applied_count() == 3000
    assert len(finished) == 1000 + 1
    assert status.pending_count == 0
    conn = await asyncpg.connect(dsn)
    try:
        counts = {
            await conn.fetchval(f"SELECT count(*) FROM tenant_{slug}.schema_migrations")
            for slug in slugs
        }
    finally:
        await conn.close()
    assert counts == {3}
    assert await fetchval(
        dsn, "SELECT count(*) FROM information_schema.columns "
             "WHERE column_name = 'avatar_url' AND table_schema LIKE 'tenant_%'") == 1000


async def test_max_failures_stops_new_schemas(dsn: str, migrations_dir: Path) -> None:
    add_migration(migrations_dir, "006_always_fails", "tenant", "SELECT 1/0;")
    async with Engine(dsn, migrations_dir, concurrency=1) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, [f"t{i}" for i in range(5)])
        report = await engine.migrate("tenants", max_failures=2)
    assert report.count(Outcome.FAILED) == 2
    assert report.count(Outcome.SKIPPED) == 3
    assert report.stopped_early
    skipped = [r for r in report.schemas if r.outcome is Outcome.SKIPPED]
    for result in skipped:  # nothing at all ran in a skipped schema
        ledger = f"{result.schema}.schema_migrations"
        assert await fetchval(dsn, f"SELECT to_regclass('{ledger}')") is None

    async with Engine(dsn, migrations_dir) as engine:
        for call in (engine.migrate("tenants", max_failures=0),
                     engine.rollback("tenants", steps=1, max_failures=0)):
            with pytest.raises(ConfigurationError, match="max_failures must be at least 1"):
                await call


async def test_a_registered_tenant_without_schema_is_reported(
    dsn: str, migrations_dir: Path
) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["ghost", "real"])
        await fetchval(dsn, "DROP SCHEMA tenant_ghost")
        report = await engine.migrate("tenants")
    by_slug = {r.slug: r for r in report.schemas}
    assert by_slug["ghost"].outcome is Outcome.FAILED
    assert "tenant_ghost does not exist" in by_slug["ghost"].failure.message
    assert by_slug["real"].outcome is Outcome.MIGRATED


async def test_a_guide_shaped_ledger_is_adopted(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["old"])
        await execute(dsn, """
            CREATE TABLE tenant_old.schema_migrations (
                version VARCHAR(255) PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
            CREATE TABLE tenant_old.users (id SERIAL PRIMARY KEY, email VARCHAR(255));
            INSERT INTO tenant_old.schema_migrations (version) VALUES ('002_create_tenant_tables');
        """)
        status = await engine.status(["old"])
        assert status.tenants[0].pending == ("003_add_user_avatar", "005_add_audit_logs")
        report = await engine.migrate(["old"])
    assert report.ok
    assert await ledger_versions(dsn, "tenant_old") == TENANT_VERSIONS
    assert await column_exists(dsn, "tenant_old", "schema_migrations", "checksum")
    assert await fetchval(
        dsn, "SELECT checksum IS NULL FROM tenant_old.schema_migrations "
             "WHERE version = '002_create_tenant_tables'")


async def test_targets_and_bad_input(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        with pytest.raises(RegistryMissingError):
            await engine.migrate("tenants")
        await engine.migrate("public")
        await register_tenants(dsn, ["acme", "corp"])
        with pytest.raises(TenantNotFoundError, match="nobody"):
            await engine.migrate(["acme", "nobody"])
        assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.schema_migrations')") is None
        report = await engine.migrate(["corp"])
    assert [r.slug for r in report.schemas] == ["corp"]
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.schema_migrations')") is None


async def test_dry_run_changes_nothing(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["acme"])
        report = await engine.migrate("all", dry_run=True)
    assert report.dry_run
    [result] = [r for r in report.schemas if r.slug == "acme"]
    assert result.outcome is Outcome.PLANNED and result.pending == TENANT_VERSIONS
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.schema_migrations')") is None


async def test_a_ledger_without_a_unique_version_gets_one(dsn: str, migrations_dir: Path) -> None:
    """The ledger's unique version is what stops a second runner: an adopted hand-made
    ledger without one gets a unique index before its first migration."""
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["handmade"])
        await execute(dsn, "CREATE TABLE tenant_handmade.schema_migrations ("
                           "version VARCHAR(255), applied_at TIMESTAMP DEFAULT now())")
        assert (await engine.migrate(["handmade"])).ok
    assert await fetchval(
        dsn, "SELECT count(*) FROM pg_index WHERE indisunique "
             "AND indrelid = 'tenant_handmade.schema_migrations'::regclass") == 1
    assert await ledger_versions(dsn, "tenant_handmade") == TENANT_VERSIONS


async def test_a_migration_changing_session_settings_leaves_none_on_pooled_connections(
    dsn: str, migrations_dir: Path
) -> None:
    """set_config(..., false) (or a SET inside a DO block) lasts for the session: the
    engine resets it before the connection goes back to the pool, after a rollout and
    after creating a tenant."""
    add_migration(migrations_dir, "006_session", "tenant",
                  "DO $$ BEGIN PERFORM set_config('statement_timeout', '4321', false);"
                  " PERFORM set_config('work_mem', '7777kB', false); END $$;")
    async with Engine(dsn, migrations_dir, concurrency=2, load_entry_points=False) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["a", "b", "c", "d"])
        assert (await engine.migrate("tenants")).ok
        await engine.create_tenant("e")  # the same migration, inside tenant creation
        settings = await on_every_pooled_connection(
            engine, "SELECT current_setting('statement_timeout') || ' '"
                    " || current_setting('work_mem')")
    for setting in settings:
        timeout, work_mem = str(setting).split()
        assert timeout == "0" and work_mem != "7777kB", settings


async def test_adopting_a_ledger_with_duplicate_versions_fails_by_name(
    dsn: str, migrations_dir: Path
) -> None:
    """Adoption makes versions unique; a ledger where they are not is a failure of that
    schema (not "already applied by another runner", which is also a 23505)."""
    keep_only(migrations_dir, "001", "002")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["acme"])
        await execute(dsn, "CREATE TABLE tenant_acme.schema_migrations (version varchar(255),"
                           " applied_at timestamp DEFAULT now())",
                      "INSERT INTO tenant_acme.schema_migrations (version) "
                      "VALUES ('000_old'), ('000_old')")
        report = await engine.migrate(["acme"])
    [result] = report.schemas
    assert result.outcome is Outcome.FAILED and result.failure.sqlstate == "23505"
    assert "cannot adopt \"tenant_acme\".schema_migrations: its versions are not unique" in (
        result.failure.message)
    assert "(version)=(000_old) is duplicated" in result.failure.message
    assert await fetchval(dsn, "SELECT to_regclass('tenant_acme.users')") is None


async def test_a_ledger_with_a_checksum_but_no_unique_version_is_adopted(
    dsn: str, migrations_dir: Path
) -> None:
    """The ledger row written first stops a second runner only if versions are unique:
    a hand-made ledger that has the checksum column but no unique version gets the index."""
    keep_only(migrations_dir, "001", "002")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["acme"])
        await execute(dsn, "CREATE TABLE tenant_acme.schema_migrations (version varchar(255),"
                           " applied_at timestamp DEFAULT now(), checksum varchar(64))")
        assert (await engine.migrate(["acme"])).applied_count() == 1
    assert await fetchval(
        dsn, "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
             " AND a.attnum = i.indkey[0] WHERE i.indrelid = 'tenant_acme.schema_migrations'"
             "::regclass AND i.indisunique AND a.attname = 'version'") == 1
    assert await ledger_versions(dsn, "tenant_acme") == ["002_create_tenant_tables"]


async def test_a_lost_connection_outside_a_transaction_is_reported_as_itself(
    dsn: str, migrations_dir: Path
) -> None:
    """A MIGRATION_TRANSACTION: false migration whose backend dies: the report says the
    connection was lost, not that the pooled connection was already given back."""
    keep_only(migrations_dir, "001", "002")
    (migrations_dir / "006_dies.py").write_text(
        '"""\nDies\n\n# MIGRATION_SCOPE: tenant\n# MIGRATION_VERSION: 006_dies\n'
        '# MIGRATION_DESCRIPTION: dies\n# MIGRATION_TRANSACTION: false\n"""\n\n'
        'UPGRADE_SQL = "SELECT pg_terminate_backend(pg_backend_pid())"\n')
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        await engine.migrate("public")
        await register_tenants(dsn, ["acme"])
        report = await engine.migrate(["acme"])
    [result] = report.schemas
    assert result.outcome is Outcome.FAILED and result.failure.version == "006_dies"
    assert "released back to the pool" not in result.failure.message
    assert "terminat" in result.failure.message.lower() or "connection" in (
        result.failure.message.lower())
    assert await ledger_versions(dsn, "tenant_acme") == ["002_create_tenant_tables"]
