"""The ledger digest: kept true by every writer, trusted only when it can be, and what
lets the fleet's state be read without opening every ledger."""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import asyncpg
import pytest

from archify_core import Engine, digest, ledger, load_migrations
from archify_core.migration import Scope
from tests.fleet import (
    add_migration,
    digest_rows,
    execute,
    fetchval,
    migrated_fleet,
    register_tenants,
    stale_digests,
    waiting_on_a_lock,
)

TENANT = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]


async def _status(dsn: str, migrations: Path) -> dict[str, tuple[list[str], list[str], bool]]:
    """slug -> (applied, pending, drift?) from archify status."""
    async with Engine(dsn, migrations, load_entry_points=False) as engine:
        status = await engine.status()
    return {t.slug: (list(t.applied), list(t.pending), bool(t.drift)) for t in status.tenants}


async def _states(dsn: str, migrations: Path) -> dict[str, ledger.SchemaState]:
    async with Engine(dsn, migrations, load_entry_points=False) as engine:
        known = digest.known_ledgers(engine.migrations.for_kind(Scope.TENANT))
        states = await ledger.read_tenant_states(engine.pool, None, known)
    return {s.slug: s for s in states if s.slug}


async def test_the_python_hash_is_the_servers(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        await engine.migrate("public")  # creates the digest table and its functions
        pairs = [("001_x", "ab" * 32), ("002_ünïcode_ß", "c"), ("003_'quote\"", None),
                 ("", ""), ("004_x", None), *((secrets.token_hex(8), secrets.token_hex(32))
                                              for _ in range(50))]
        for version, checksum in pairs:
            server = await engine.pool.fetchval(
                "SELECT public.archify_ledger_row_hash($1, $2)", version, checksum)
            assert server == digest.row_hash(version, checksum), (version, checksum)


def test_known_ledgers_are_the_prefixes_of_the_tenant_migrations(migrations_dir: Path) -> None:
    tenant = load_migrations(migrations_dir).for_kind(Scope.TENANT)
    known = digest.known_ledgers(tenant)
    assert len(known) == len(tenant) + 1
    assert dict(known[(0, 0)]) == {}
    both = digest.row_hash(tenant[0].version, tenant[0].checksum) ^ digest.row_hash(
        tenant[1].version, tenant[1].checksum)
    assert dict(known[(both, 2)]) == {m.version: m.checksum for m in tenant[:2]}
    gap = digest.row_hash(tenant[0].version, tenant[0].checksum) ^ digest.row_hash(
        tenant[2].version, tenant[2].checksum)
    assert (gap, 2) not in known  # 002 and 005 without 003: read from the ledger
    edited = digest.row_hash(tenant[0].version, "another checksum")
    assert (edited, 1) not in known


async def test_every_archify_write_keeps_the_digest_true(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp", "zeta"])
    assert await digest_rows(dsn) == {"tenant_acme", "tenant_corp", "tenant_zeta"}
    assert await stale_digests(dsn) == []
    # a Python migration and one outside a transaction, then roll back and forth
    (migrations_dir / "006_python.py").write_text(
        '"""\nPython\n\n# MIGRATION_SCOPE: tenant\n# MIGRATION_VERSION: 006_python\n'
        '# MIGRATION_DESCRIPTION: python\n"""\n\n\nasync def upgrade(conn):\n'
        '    await conn.execute("ALTER TABLE users ADD COLUMN py int")\n\n\n'
        'async def downgrade(conn):\n    await conn.execute("ALTER TABLE users DROP COLUMN py")\n')
    (migrations_dir / "007_concurrently.py").write_text(
        '"""\nIndex\n\n# MIGRATION_SCOPE: tenant\n# MIGRATION_VERSION: 007_concurrently\n'
        '# MIGRATION_DESCRIPTION: index\n# MIGRATION_TRANSACTION: false\n"""\n\n'
        'UPGRADE_SQL = "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_py ON users (py)"\n'
        'DOWNGRADE_SQL = "DROP INDEX CONCURRENTLY IF EXISTS users_py"\n')
    # a migration that resets the session (and with it archify's writer mark)
    add_migration(migrations_dir, "008_reset", "tenant", "ALTER TABLE users ADD r int; RESET ALL",
                  "ALTER TABLE users DROP COLUMN r; RESET ALL")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).applied_count() == 9
        assert await stale_digests(dsn) == []
        assert (await engine.rollback(["acme"], steps=4)).ok
        assert (await engine.rollback(["corp"], to="002_create_tenant_tables")).ok
        assert await stale_digests(dsn) == []
        await engine.create_tenant("new")
        await engine.create_tenant("bare", migrate=False)
        assert (await engine.migrate("tenants")).ok
        assert await stale_digests(dsn) == []
        status = await engine.status()
        assert all(not t.pending for t in status.tenants)
        await engine.drop_tenant("zeta")
    assert {"tenant_new", "tenant_bare"} <= await digest_rows(dsn)
    assert await fetchval(dsn, "SELECT count(*) FROM public.archify_ledger_digest "
                               "WHERE schema_name = 'tenant_zeta'") == 0
    assert await stale_digests(dsn) == []
    states = await _states(dsn, migrations_dir)
    assert all(s.from_digest for s in states.values())


async def test_a_manual_edit_of_a_ledger_is_seen_by_the_next_status(
    dsn: str, migrations_dir: Path
) -> None:
    """The guide's manual rollback (DELETE FROM schema_migrations by hand), an edited
    checksum, a row for a version no file has and TRUNCATE: the trigger follows each."""
    slugs = ["deleted", "edited", "unknown", "truncated", "untouched"]
    await migrated_fleet(dsn, migrations_dir, slugs)
    await execute(
        dsn,
        "SET search_path TO tenant_deleted; "
        "DELETE FROM schema_migrations WHERE version = '005_add_audit_logs'",
        "UPDATE tenant_edited.schema_migrations SET checksum = 'x' "
        "WHERE version = '003_add_user_avatar'",
        "INSERT INTO tenant_unknown.schema_migrations (version) VALUES ('009_gone')",
        "TRUNCATE tenant_truncated.schema_migrations",
    )
    assert await stale_digests(dsn) == []
    status = await _status(dsn, migrations_dir)
    assert status["deleted"] == (TENANT[:2], TENANT[2:], False)
    assert status["edited"] == (TENANT, [], True)
    assert status["unknown"] == ([*TENANT, "009_gone"], [], True)
    assert status["truncated"] == ([], TENANT, False)
    assert status["untouched"] == (TENANT, [], False)
    states = await _states(dsn, migrations_dir)
    # a ledger still matching a known state needs no read; the others are read
    assert states["deleted"].from_digest and states["truncated"].from_digest
    assert not states["edited"].from_digest and not states["unknown"].from_digest
    # and the rollout redoes what the manual rollback undid
    await execute(dsn, "SET search_path TO tenant_deleted; DROP TABLE audit_logs")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.migrate(["deleted"])
    assert [a.version for a in report.schemas[0].applied] == ["005_add_audit_logs"]
    assert await stale_digests(dsn) == []



@pytest.mark.parametrize("write", [
    "INSERT INTO tenant_acme.schema_migrations (version) VALUES ('009_manual')",
    "DELETE FROM tenant_acme.schema_migrations WHERE version = '005_add_audit_logs'",
    "TRUNCATE tenant_acme.schema_migrations",
])
async def test_the_trigger_finds_its_digest_row_by_key_in_a_big_fleet(
    dsn: str, migrations_dir: Path, write: str
) -> None:
    """A manual ledger write updates one digest row through the table's primary key, not
    a scan of every tenant's row (it once compared the key with a `name`: ~0.4 ms per
    write at 10,000 tenants). Counted by the server for this very transaction."""
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    await execute(dsn, "INSERT INTO public.archify_ledger_digest"
                       " SELECT 'other_' || i, 0, 0, 0 FROM generate_series(1, 5000) i",
                  "ANALYZE public.archify_ledger_digest")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(write)
            scans = await conn.fetchrow(
                "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables"
                " WHERE relid = 'public.archify_ledger_digest'::regclass")
    finally:
        await conn.close()
    assert (scans["seq_scan"], scans["idx_scan"]) == (0, 1)
    assert await stale_digests(dsn) == []

@pytest.mark.parametrize("how", ["migrate", "create-tenant"])
async def test_a_migration_writing_its_own_ledger_is_followed_by_the_digest(
    dsn: str, migrations_dir: Path, how: str
) -> None:
    """Archify's mark (which tells the trigger to skip archify's own ledger rows) ends
    with those rows: a migration's own write to the ledger is one the trigger applies."""
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    add_migration(migrations_dir, "006_forget_audit", "tenant",
                  "DELETE FROM schema_migrations WHERE version = '005_add_audit_logs';")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        if how == "migrate":
            assert (await engine.migrate("tenants")).ok
        else:
            await engine.create_tenant("acme2")
    slug = "acme" if how == "migrate" else "acme2"
    assert await stale_digests(dsn) == []
    applied, pending, _ = (await _status(dsn, migrations_dir))[slug]
    assert "005_add_audit_logs" in pending and "006_forget_audit" in applied


async def test_a_look_alike_hash_function_is_never_called(
    dsn: str, migrations_dir: Path
) -> None:
    """Any role may create functions in `public` on PostgreSQL 14: a `(varchar, varchar)`
    namesake of the hash function would be a better match for the ledger's varchar
    columns and would run with archify's privileges, unless every call casts to text."""
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    await execute(dsn, "CREATE FUNCTION public.archify_ledger_row_hash(varchar, varchar)"
                       " RETURNS bigint LANGUAGE plpgsql AS"
                       " $$ BEGIN RAISE EXCEPTION 'look-alike called'; END $$")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.rollback(["acme"], steps=1)).ok  # the digest's unrecord
        assert await engine.validate() == []  # digest.stale's sums
    await execute(dsn, "DROP TRIGGER archify_ledger_digest ON tenant_corp.schema_migrations",
                  "DELETE FROM tenant_corp.schema_migrations WHERE version = '005_add_audit_logs'")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).ok  # re-tracking: refresh_sql's sum
    assert await stale_digests(dsn) == []
    assert set(await digest_rows(dsn)) == {"tenant_acme", "tenant_corp"}


async def test_a_digest_table_of_another_role_is_neither_written_nor_trusted(
    dsn: str, migrations_dir: Path
) -> None:
    """Where every role may create tables in `public` (the default before PostgreSQL
    15), one could create the digest table before archify's first run: its trigger would
    then run with archify's privileges on every ledger write, and rows it forged would
    decide what is pending. Archify neither writes nor trusts such a table (it reads
    every ledger), and says why."""
    role = f"intruder_{secrets.token_hex(3)}"
    await execute(dsn, f"CREATE ROLE {role}", f"GRANT CREATE ON SCHEMA public TO {role}",
                  "CREATE TABLE public.intruder_log (who text)",
                  "GRANT INSERT ON public.intruder_log TO PUBLIC")
    await execute(
        dsn, f"SET ROLE {role}",
        "CREATE TABLE public.archify_ledger_digest (schema_name text PRIMARY KEY,"
        " ledger oid NOT NULL, fingerprint bigint NOT NULL, applied integer NOT NULL);"
        " GRANT ALL ON public.archify_ledger_digest TO PUBLIC",
        "CREATE FUNCTION public.intruder() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO public.intruder_log VALUES (current_user); RETURN NULL; END $$",
        "CREATE TRIGGER intruder AFTER INSERT OR UPDATE OR DELETE"
        " ON public.archify_ledger_digest FOR EACH ROW EXECUTE FUNCTION public.intruder()")
    notices: list[str] = []
    try:
        async with Engine(dsn, migrations_dir, load_entry_points=False,
                          on_event=lambda e: notices.append(getattr(e, "message", ""))) as engine:
            assert (await engine.migrate("public")).ok
            await register_tenants(dsn, ["acme", "corp"])
            assert (await engine.migrate("tenants")).ok
            assert (await engine.rollback(["corp"], steps=1)).ok
        assert any(f"belongs to role {role}" in n for n in notices), notices
        # a row claiming every migration for acme, whose last one is then deleted by hand
        everything = next(key for key, applied in digest.known_ledgers(
            load_migrations(migrations_dir).for_kind(Scope.TENANT)).items()
            if len(applied) == len(TENANT))
        ledger_oid = await fetchval(dsn, "SELECT 'tenant_acme.schema_migrations'::regclass::oid")
        await execute(
            dsn, "DELETE FROM tenant_acme.schema_migrations WHERE version = '005_add_audit_logs'",
            f"SET ROLE {role}",
            "INSERT INTO public.archify_ledger_digest VALUES ('tenant_acme',"
            f" {ledger_oid}, {everything[0]}, {everything[1]})")
        status = await _status(dsn, migrations_dir)
        assert status["acme"] == (TENANT[:2], TENANT[2:], False)
        assert status["corp"] == (TENANT[:2], TENANT[2:], False)
        assert await fetchval(dsn, f"SELECT count(*) FROM public.intruder_log"
                                   f" WHERE who <> '{role}'") == 0
    finally:
        await execute(dsn, f"DROP OWNED BY {role} CASCADE", f"DROP ROLE {role}")


async def test_a_digest_of_the_registrys_owner_is_trusted(
    dsn: str, migrations_dir: Path
) -> None:
    """docs/security.md's split: an admin role, not a superuser, owns the registry and
    the digest (it ran `archify public`); another role migrates. The digest is trusted
    as far as the registry is."""
    admin = f"admin_{secrets.token_hex(3)}"
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    await execute(dsn, f"CREATE ROLE {admin}",
                  f"ALTER TABLE public.tenants OWNER TO {admin}",
                  f"ALTER TABLE public.archify_ledger_digest OWNER TO {admin}",
                  f"ALTER FUNCTION public.archify_ledger_row_hash(text, text) OWNER TO {admin}",
                  f"ALTER FUNCTION public.archify_ledger_digest_sync() OWNER TO {admin}")
    try:
        assert (await _states(dsn, migrations_dir))["acme"].from_digest
        await execute(dsn, "ALTER TABLE public.tenants OWNER TO CURRENT_USER")
        assert not (await _states(dsn, migrations_dir))["acme"].from_digest
    finally:
        await execute(dsn, f"REASSIGN OWNED BY {admin} TO CURRENT_USER", f"DROP ROLE {admin}")


async def test_a_partitioned_ledger_is_read_not_trusted(dsn: str, migrations_dir: Path) -> None:
    """A partitioned ledger's row trigger fires on a partition, which the digest row does
    not name: its digest cannot follow manual writes, so the ledger itself is read."""
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
    await register_tenants(dsn, ["parted"])
    await execute(dsn, "CREATE TABLE tenant_parted.schema_migrations (version varchar(255)"
                       " PRIMARY KEY, applied_at timestamp DEFAULT CURRENT_TIMESTAMP,"
                       " checksum varchar(64)) PARTITION BY LIST (version);"
                       " CREATE TABLE tenant_parted.ledger_all PARTITION OF"
                       " tenant_parted.schema_migrations DEFAULT")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("tenants")).ok
    await execute(dsn, "DELETE FROM tenant_parted.schema_migrations"
                       " WHERE version = '005_add_audit_logs'")
    assert (await _status(dsn, migrations_dir))["parted"] == (TENANT[:2], TENANT[2:], False)
    assert not (await _states(dsn, migrations_dir))["parted"].from_digest


@pytest.mark.parametrize("how", ["trigger disabled", "trigger dropped", "ledger replaced",
                                 "row tampered"])
async def test_a_digest_that_cannot_be_trusted_is_not_used(
    dsn: str, migrations_dir: Path, how: str
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    ledger_table = "tenant_acme.schema_migrations"
    edit = {
        "trigger disabled": f"ALTER TABLE {ledger_table} DISABLE TRIGGER archify_ledger_digest;"
                            f" DELETE FROM {ledger_table} WHERE version = '005_add_audit_logs'",
        "trigger dropped": f"DROP TRIGGER archify_ledger_digest_truncate ON {ledger_table};"
                           f" TRUNCATE {ledger_table}",
        "ledger replaced": f"CREATE TABLE tenant_acme.copy AS SELECT * FROM {ledger_table}"
                           " WHERE version <> '005_add_audit_logs';"
                           f" DROP TABLE {ledger_table};"
                           f" ALTER TABLE tenant_acme.copy RENAME TO schema_migrations",
        "row tampered": "UPDATE public.archify_ledger_digest SET fingerprint = 42"
                        " WHERE schema_name = 'tenant_acme'",
    }[how]
    await execute(dsn, edit)
    # the row still names the ledger it summed, and is wrong now (except for a new ledger)
    assert await stale_digests(dsn) == ([] if how == "ledger replaced" else ["tenant_acme"])
    expected = {
        "trigger disabled": (TENANT[:2], TENANT[2:], False),
        "trigger dropped": ([], TENANT, False),
        "ledger replaced": (TENANT[:2], TENANT[2:], False),
        "row tampered": (TENANT, [], False),
    }[how]
    status = await _status(dsn, migrations_dir)
    assert status["acme"] == expected
    assert status["corp"] == (TENANT, [], False)
    states = await _states(dsn, migrations_dir)
    assert not states["acme"].from_digest and states["corp"].from_digest
    if how != "row tampered":
        assert not states["acme"].tracked
        # the next migration of that schema tracks it again, with a true digest
        add_migration(migrations_dir, "006_more", "tenant", "ALTER TABLE users ADD m int")
        if expected[1]:
            await execute(dsn, "DROP TABLE IF EXISTS tenant_acme.audit_logs")
        async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
            assert (await engine.migrate(["acme"])).ok
        states = await _states(dsn, migrations_dir)
        assert states["acme"].tracked and states["acme"].from_digest
        assert await stale_digests(dsn) == []


async def test_the_status_of_a_tracked_fleet_opens_no_ledger(
    dsn: str, migrations_dir: Path
) -> None:
    """With a ledger locked against everyone, status still answers at once: it did not
    read that ledger. (Reading it would wait for the lock.)"""
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    locker = await asyncpg.connect(dsn)
    try:
        await locker.execute("BEGIN; LOCK TABLE tenant_acme.schema_migrations "
                             "IN ACCESS EXCLUSIVE MODE")
        with anyio.fail_after(20):
            status = await _status(dsn, migrations_dir)
            async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
                noop = await engine.migrate("tenants")
        assert status["acme"] == (TENANT, [], False)
        assert noop.ok and noop.applied_count() == 0
    finally:
        await locker.close()


async def test_ledgers_from_before_the_digest_are_tracked_by_their_next_migration(
    dsn: str, migrations_dir: Path
) -> None:
    """A fleet migrated by a version of archify without the digest (or by the guide's
    tool) is read ledger by ledger, and tracked from each schema's next migration."""
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    await execute(dsn, "DROP TABLE public.archify_ledger_digest",
                  "DROP TRIGGER archify_ledger_digest ON tenant_acme.schema_migrations",
                  "DROP TRIGGER archify_ledger_digest_truncate ON tenant_acme.schema_migrations",
                  "DROP TRIGGER archify_ledger_digest ON tenant_corp.schema_migrations",
                  "DROP TRIGGER archify_ledger_digest_truncate ON tenant_corp.schema_migrations")
    assert await _status(dsn, migrations_dir) == {s: (TENANT, [], False) for s in ("acme", "corp")}
    add_migration(migrations_dir, "006_more", "tenant", "ALTER TABLE users ADD m int")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("all")).applied_count() == 2
    assert await digest_rows(dsn) == {"tenant_acme", "tenant_corp"}
    assert await stale_digests(dsn) == []
    states = await _states(dsn, migrations_dir)
    assert all(s.tracked and s.from_digest for s in states.values())


async def test_a_role_that_may_not_write_the_digest_migrates_and_the_trigger_keeps_it(
    dsn: str, migrations_dir: Path
) -> None:
    """The digest table is the owner's; a role owning only a tenant schema migrates it
    (plain ledger rows) and the SECURITY DEFINER trigger keeps the digest true."""
    role = f"owner_{secrets.token_hex(3)}"
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    database = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    tables = ["schema_migrations", "users", "audit_logs"]
    await execute(
        dsn, f"CREATE ROLE {role} LOGIN",
        f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON public.tenants, public.schema_migrations TO {role}",
        f"ALTER SCHEMA tenant_acme OWNER TO {role}",
        *(f"ALTER TABLE tenant_acme.{t} OWNER TO {role}" for t in tables),
    )
    add_migration(migrations_dir, "006_more", "tenant", "ALTER TABLE users ADD m int",
                  "ALTER TABLE users DROP COLUMN m")
    scheme, rest = dsn.split("://", 1)
    as_role = f"{scheme}://{role}@{rest.split('@', 1)[1]}"
    try:
        async with Engine(as_role, migrations_dir, load_entry_points=False) as engine:
            assert (await engine.migrate("tenants")).applied_count() == 1
            assert await stale_digests(dsn) == []
            assert (await engine.rollback(["acme"], steps=1)).ok
            assert await stale_digests(dsn) == []
            status = await engine.status()
        assert status.tenants[0].pending == ("006_more",)
        states = await _states(dsn, migrations_dir)
        assert states["acme"].from_digest
    finally:
        await execute(dsn, f"DROP OWNED BY {role} CASCADE", f"DROP ROLE {role}")


async def test_before_postgresql_14_there_is_no_digest_and_everything_works(
    dsn: str, migrations_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CREATE OR REPLACE TRIGGER and bit_xor need PostgreSQL 14: on an older server (made
    to look older here) archify keeps no digest and reads every ledger."""
    monkeypatch.setattr(digest, "MIN_SERVER_VERSION", 10**7)
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        await engine.create_tenant("corp")
        assert (await engine.rollback(["acme"], steps=1)).ok
    assert await fetchval(dsn, "SELECT to_regclass('public.archify_ledger_digest')") is None
    assert await fetchval(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'archify%'") == 0
    status = await _status(dsn, migrations_dir)
    assert status == {"acme": (TENANT[:2], TENANT[2:], False), "corp": (TENANT, [], False)}


async def test_validate_finds_a_digest_written_around_the_triggers(
    dsn: str, migrations_dir: Path
) -> None:
    """A ledger row deleted with triggers skipped (session_replication_role = replica) is
    the digest's blind spot: status still trusts it, `archify validate` says so and how
    to fix it, and after the fix status reads the ledger."""
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp"])
    await execute(dsn, "SET session_replication_role = replica; DELETE FROM "
                       "tenant_acme.schema_migrations WHERE version = '005_add_audit_logs'")
    assert (await _status(dsn, migrations_dir))["acme"] == (TENANT, [], False)  # trusted
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        problems = await engine.validate()
    [problem] = problems
    assert problem.startswith("tenant_acme: its ledger digest disagrees with its ledger")
    fix = problem[problem.index("DROP TRIGGER"):problem.index(" so that")]
    await execute(dsn, fix)
    assert (await _status(dsn, migrations_dir))["acme"] == (TENANT[:2], TENANT[2:], False)


async def test_digest_functions_from_another_version_are_set_up_again(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    mark = "SELECT obj_description('public.archify_ledger_digest_sync()'::regprocedure)"
    assert await fetchval(dsn, mark) == digest.SETUP_MARK
    await execute(dsn, "COMMENT ON FUNCTION public.archify_ledger_digest_sync() IS 'old'")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert (await engine.migrate("all")).ok  # nothing pending, but a run that writes
    assert await fetchval(dsn, mark) == digest.SETUP_MARK


async def test_a_tenant_dropped_while_validate_reads_its_ledger_is_left_out(
    dsn: str, migrations_dir: Path
) -> None:
    """validate lists the tracked ledgers, then reads them: a tenant dropped in between
    (its DROP waited on, committed while the read waits for its lock) is left out, and
    the other ledgers are still checked, instead of the check failing with 42P01."""
    await migrated_fleet(dsn, migrations_dir, ["acme", "corp", "dora"])
    await execute(dsn, "UPDATE public.archify_ledger_digest SET applied = 99"
                       " WHERE schema_name = 'tenant_dora'")  # a digest that disagrees
    dropper, checker = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await dropper.execute("BEGIN; DROP SCHEMA tenant_acme CASCADE")
        pid = await checker.fetchval("SELECT pg_backend_pid()")
        async with anyio.create_task_group() as tg:
            found: list[str] = []

            async def check() -> None:
                found.extend(await digest.stale(checker))

            tg.start_soon(check)
            await waiting_on_a_lock(dropper, pid)
            await dropper.execute("COMMIT")
    finally:
        await dropper.close()
        await checker.close()
    assert found == ["tenant_dora"]
    assert await fetchval(dsn, "SELECT to_regnamespace('tenant_acme')") is None
