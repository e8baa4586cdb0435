"""Beyond the guide: migrations outside a transaction, and async Python migrations."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from archify_core import Engine, MigrationSetError, Outcome, load_migrations
from tests.fleet import fetchval, ledger_versions, migrated_fleet

CONCURRENT_INDEX = '''"""
Index users by name without blocking writes

# MIGRATION_SCOPE: tenant
# MIGRATION_VERSION: 006_index_names
# MIGRATION_DESCRIPTION: Index users.full_name concurrently
# MIGRATION_TRANSACTION: false
"""

UPGRADE_SQL = """
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_name ON users (full_name);
-- a second statement, run on its own
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_created ON users (created_at);
"""

DOWNGRADE_SQL = """
DROP INDEX CONCURRENTLY IF EXISTS idx_users_created;
DROP INDEX CONCURRENTLY IF EXISTS idx_users_name;
"""
'''

PYTHON_MIGRATION = '''"""
Backfill display names in Python

# MIGRATION_SCOPE: tenant
# MIGRATION_VERSION: 006_backfill_names
# MIGRATION_DESCRIPTION: Fill users.full_name from the email address
"""


async def upgrade(conn):
    await conn.execute("ALTER TABLE users ADD COLUMN IF NOT EXISTS display_name TEXT")
    rows = await conn.fetch("SELECT id, email FROM users")
    for row in rows:
        name = row["email"].split("@")[0].replace(".", " ").title()
        await conn.execute("UPDATE users SET display_name = $1 WHERE id = $2", name, row["id"])
    if await conn.fetchval("SELECT count(*) FROM users WHERE email = 'fail@x.io'"):
        raise RuntimeError("refusing to backfill a poisoned tenant")


async def downgrade(conn):
    await conn.execute("ALTER TABLE users DROP COLUMN display_name")
'''


async def _indexes(dsn: str, schema: str) -> list[str]:
    return await fetchval(
        dsn, "SELECT coalesce(array_agg(indexname::text ORDER BY indexname), '{}') FROM pg_indexes "
             "WHERE schemaname = $1 AND indexname LIKE 'idx_users_%'", schema)


async def test_non_transactional_migration_runs_each_statement(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    (migrations_dir / "006_index_names.py").write_text(CONCURRENT_INDEX)
    assert not load_migrations(migrations_dir).get("006_index_names").transactional
    async with Engine(dsn, migrations_dir) as engine:
        report = await engine.migrate("tenants")
        assert report.ok, report.failed
        for slug in ("acme", "corp"):
            assert await _indexes(dsn, f"tenant_{slug}") == [
                "idx_users_avatar", "idx_users_created", "idx_users_name"]
            assert (await ledger_versions(dsn, f"tenant_{slug}"))[-1] == "006_index_names"
        assert await fetchval(dsn, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' "
                                   "AND indexname LIKE 'idx_users_%'") == 0
        # the session was left clean: no lingering search_path or advisory lock
        assert await fetchval(dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
        back = await engine.rollback(["acme"], steps=1)
    assert back.ok
    assert await _indexes(dsn, "tenant_acme") == ["idx_users_avatar"]
    assert "006_index_names" not in await ledger_versions(dsn, "tenant_acme")


async def test_new_tenant_gets_non_transactional_migrations_inside_its_transaction(
    dsn: str, migrations_dir: Path
) -> None:
    (migrations_dir / "006_index_names.py").write_text(CONCURRENT_INDEX)
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await engine.create_tenant("fresh")
    assert await _indexes(dsn, "tenant_fresh") == [
        "idx_users_avatar", "idx_users_created", "idx_users_name"]


async def test_python_migration_runs_in_the_schema_transaction(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "poisoned"])
    await fetchval(dsn, "INSERT INTO tenant_acme.users (email) VALUES ('jane.doe@acme.io')")
    await fetchval(dsn, "INSERT INTO tenant_poisoned.users (email) VALUES ('fail@x.io')")
    (migrations_dir / "006_backfill_names.py").write_text(PYTHON_MIGRATION)
    async with Engine(dsn, migrations_dir) as engine:
        report = await engine.migrate("tenants")
        by_slug = {r.slug: r for r in report.schemas}
        assert by_slug["acme"].outcome is Outcome.MIGRATED
        assert await fetchval(dsn, "SELECT display_name FROM tenant_acme.users") == "Jane Doe"
        poisoned = by_slug["poisoned"]
        assert poisoned.outcome is Outcome.FAILED
        assert poisoned.failure.version == "006_backfill_names"
        assert "poisoned tenant" in poisoned.failure.message
        # its transaction rolled back whole: no column, no ledger row
        assert await fetchval(dsn, "SELECT count(*) FROM information_schema.columns WHERE "
                                   "table_schema = 'tenant_poisoned' AND column_name = 'display_name'") == 0
        assert "006_backfill_names" not in await ledger_versions(dsn, "tenant_poisoned")

        await engine.create_tenant("newco", admin_email="first.admin@newco.io")
        back = await engine.rollback(["acme"], steps=1)
    assert back.ok
    assert await fetchval(dsn, "SELECT count(*) FROM information_schema.columns WHERE "
                               "table_schema = 'tenant_acme' AND column_name = 'display_name'") == 0
    assert (await ledger_versions(dsn, "tenant_newco"))[-1] == "006_backfill_names"


def test_python_migration_checks(tmp_path: Path) -> None:
    bad = PYTHON_MIGRATION.replace("async def upgrade(conn):", "async def upgrade(conn, extra):")
    (tmp_path / "006_backfill_names.py").write_text(bad)
    with pytest.raises(MigrationSetError, match="must take exactly one argument"):
        load_migrations(tmp_path)
    nontx = PYTHON_MIGRATION.replace('"""\n\n\nasync', '# MIGRATION_TRANSACTION: false\n"""\n\n\nasync')
    (tmp_path / "006_backfill_names.py").write_text(nontx)
    with pytest.raises(MigrationSetError, match="always runs in a transaction"):
        load_migrations(tmp_path)
    (tmp_path / "006_backfill_names.py").write_text(
        CONCURRENT_INDEX.replace("TRANSACTION: false", "TRANSACTION: maybe").replace(
            "006_index_names", "006_backfill_names"))
    with pytest.raises(MigrationSetError, match="must be true or false"):
        load_migrations(tmp_path)


MIXED_SQL_UP_PYTHON_DOWN = '''"""
Add a nickname column; its rollback is Python

# MIGRATION_SCOPE: tenant
# MIGRATION_VERSION: 006_nickname
# MIGRATION_DESCRIPTION: nickname
"""

UPGRADE_SQL = "ALTER TABLE users ADD COLUMN nickname TEXT"


async def downgrade(conn):
    await conn.execute("ALTER TABLE users DROP COLUMN nickname")
'''

MIXED_PYTHON_UP_SQL_DOWN = '''"""
Add a motto column from Python; its rollback is SQL

# MIGRATION_SCOPE: tenant
# MIGRATION_VERSION: 007_motto
# MIGRATION_DESCRIPTION: motto
"""


async def upgrade(conn):
    await conn.execute("ALTER TABLE users ADD COLUMN motto TEXT")

DOWNGRADE_SQL = "ALTER TABLE users DROP COLUMN motto"
'''


async def _has_column(dsn: str, schema: str, column: str) -> bool:
    return bool(await fetchval(
        dsn, "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 "
             "AND table_name = 'users' AND column_name = $2", schema, column))


async def test_upgrade_and_downgrade_of_different_kinds_each_run_their_own_way(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    (migrations_dir / "006_nickname.py").write_text(MIXED_SQL_UP_PYTHON_DOWN)
    (migrations_dir / "007_motto.py").write_text(MIXED_PYTHON_UP_SQL_DOWN)
    async with Engine(dsn, migrations_dir) as engine:
        assert (await engine.migrate("tenants")).ok
        assert await _has_column(dsn, "tenant_acme", "nickname")
        assert await _has_column(dsn, "tenant_acme", "motto")
        back = await engine.rollback(["acme"], steps=2)
    assert back.ok, back.failed
    assert not await _has_column(dsn, "tenant_acme", "nickname")
    assert not await _has_column(dsn, "tenant_acme", "motto")
    assert (await ledger_versions(dsn, "tenant_acme"))[-1] == "005_add_audit_logs"


async def test_a_failed_non_transactional_step_is_not_retried(
    dsn: str, migrations_dir: Path
) -> None:
    """Its statements before the failure stay, so running it again is not safe: one
    attempt, reported, and no ledger row."""
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    (migrations_dir / "006_index_names.py").write_text(CONCURRENT_INDEX)
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("BEGIN; LOCK TABLE tenant_acme.users IN ACCESS EXCLUSIVE MODE")
        async with Engine(dsn, migrations_dir, lock_timeout=0.2, retries=3,
                          retry_backoff=0.01) as engine:
            report = await engine.migrate("tenants")
    finally:
        await holder.close()
    [result] = report.failed
    assert result.failure.sqlstate == "55P03" and result.failure.attempts == 1
    assert "006_index_names" not in await ledger_versions(dsn, "tenant_acme")
