"""Structural drift: tenants whose schema no longer looks like the others'
(`Engine.structural_drift`, `archify drift`), against a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archify_core import ConfigurationError, Engine, structure
from archify_core.structural_drift import compare, differences, group_by_fingerprint
from tests.fleet import add_migration, execute, fetchval, migrated_fleet
from tests.test_cli import archify

SLUGS = ["acme", "bravo", "corp", "delta", "echo", "fox"]


async def _hand_modified_fleet(dsn: str, migrations: Path) -> None:
    """Six migrated tenants; three changed by hand (and their ledgers left alone)."""
    await migrated_fleet(dsn, migrations, SLUGS)
    await execute(
        dsn,
        "CREATE INDEX idx_users_email ON tenant_acme.users(email)",
        "ALTER TABLE tenant_bravo.users ALTER COLUMN bio TYPE varchar(200)",
        "ALTER TABLE tenant_corp.users DROP CONSTRAINT users_email_key",
    )


# -- pure ----------------------------------------------------------------------------

def test_groups_largest_first_and_ties_by_first_schema() -> None:
    groups = group_by_fingerprint({"b": "x", "a": "y", "c": "x", "d": "z"})
    assert list(groups.items()) == [("x", ["b", "c"]), ("y", ["a"]), ("z", ["d"])]


def test_differences_read_as_sentences() -> None:
    reference = {("column", "users.bio"): "text", ("table", "users"): ""}
    drifted = {("column", "users.bio"): "character varying(200)", ("table", "users"): "",
               ("index", "idx_users_email"):
                   "CREATE INDEX idx_users_email ON users USING btree (email)"}
    assert [d.describe() for d in differences(drifted, reference)] == [
        "users.bio is character varying(200), reference text",
        "extra index idx_users_email on users(email)",
    ]
    report = compare({"s1": "a", "s2": "a", "s3": "b"}, {"s1": reference, "s3": drifted},
                     against="majority")
    assert report.alike == ("s1", "s2") and report.drifted == ["s3"]
    assert json.loads(json.dumps(report.to_dict()))["drifted"] == ["s3"]


def test_fingerprints_whose_schemas_read_the_same_are_one_group() -> None:
    # the catalog's fingerprints told s2 apart (a column's number, say); its text did not
    users = {("column", "users.id"): "integer not null", ("table", "users"): "columns (id)"}
    bio = {**users, ("column", "users.bio"): "text"}
    report = compare({"s1": "a", "s2": "b", "s3": "a", "s4": "c"},
                     {"s1": users, "s2": dict(users), "s4": bio}, against="majority")
    assert report.alike == ("s1", "s2", "s3")
    assert [g.schemas for g in report.groups] == [("s4",)]
    assert report.lines() == ["s4: extra column users.bio (text)"]
    # against a given reference, the groups are the structures' too
    by_files = compare({"s1": "a", "s2": "b", "s3": "a", "s4": "c"},
                       {"s1": users, "s2": users, "s4": bio}, bio, against="migrations")
    assert by_files.alike == ("s4",) and by_files.drifted == ["s1", "s2", "s3"]
    assert by_files.lines() == ["s1, s2, s3: missing column users.bio (text)"]


# -- against PostgreSQL --------------------------------------------------------------

async def test_majority_names_each_drifted_tenant_and_how(dsn: str, migrations_dir: Path) -> None:
    await _hand_modified_fleet(dsn, migrations_dir)
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift()
    assert report.alike == ("tenant_delta", "tenant_echo", "tenant_fox")
    assert report.drifted == ["tenant_acme", "tenant_bravo", "tenant_corp"]
    assert report.lines() == [
        "tenant_acme: extra index idx_users_email on users(email)",
        "tenant_bravo: users.bio is character varying(200), reference text",
        "tenant_corp: missing constraint users.users_email_key (UNIQUE (email))",
    ]
    # ledgers agree: this is not the checksum drift validate reports
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        assert await engine.validate() == []


async def test_against_migrations_uses_a_scratch_schema_it_rolls_back(
        dsn: str, migrations_dir: Path) -> None:
    # every tenant but one got the same hotfix: the majority is the hotfix, the files are not
    await migrated_fleet(dsn, migrations_dir, ["acme", "bravo", "corp"])
    await execute(dsn, "ALTER TABLE tenant_acme.users ADD COLUMN nickname text",
                  "ALTER TABLE tenant_bravo.users ADD COLUMN nickname text")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        by_majority = await engine.structural_drift()
        by_files = await engine.structural_drift(against="migrations")
    assert by_majority.drifted == ["tenant_corp"]
    assert by_majority.lines() == ["tenant_corp: missing column users.nickname (text)"]
    assert by_files.alike == ("tenant_corp",)
    assert by_files.lines() == ["tenant_acme, tenant_bravo: extra column users.nickname (text)"]
    assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace "
                               "WHERE nspname LIKE 'archify_drift_%'") == 0


async def test_many_tenants_that_differ_alike_are_one_group(
        dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    await execute(dsn, *(f"DROP INDEX tenant_{s}.idx_users_avatar" for s in ("acme", "bravo")))
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift()
    assert [g.schemas for g in report.groups] == [("tenant_acme", "tenant_bravo")]
    assert report.lines() == ["tenant_acme, tenant_bravo: missing index idx_users_avatar "
                              "on users(avatar_url)"]


async def test_ledger_rows_and_data_are_not_structure(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "bravo"])
    await execute(dsn, "INSERT INTO tenant_acme.users (email) VALUES ('a@example.com')",
                  "DELETE FROM tenant_bravo.schema_migrations")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift(against="migrations")
    assert report.ok and report.alike == ("tenant_acme", "tenant_bravo")


async def test_unknown_reference_is_refused(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        with pytest.raises(ConfigurationError, match="majority"):
            await engine.structural_drift(against="yesterday")


# -- the command ---------------------------------------------------------------------

async def test_cli_exit_codes_text_and_json(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "bravo", "corp"])
    alike = archify("drift", dsn=dsn, migrations=migrations_dir)
    assert alike.returncode == 0, alike.stderr
    assert "3 tenants alike" in alike.stdout

    await execute(dsn, "CREATE INDEX idx_users_email ON tenant_acme.users(email)")
    text = archify("drift", dsn=dsn, migrations=migrations_dir)
    assert text.returncode == 1, text.stderr
    assert "tenant_acme: extra index idx_users_email on users(email)" in text.stdout

    as_json = archify("drift", "--json", "--against", "migrations", dsn=dsn,
                      migrations=migrations_dir)
    assert as_json.returncode == 1, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["against"] == "migrations" and report["drifted"] == ["tenant_acme"]
    assert report["groups"][0]["differences"][0]["change"] == "extra"

    bad = archify("drift", "--against", "yesterday", dsn=dsn, migrations=migrations_dir)
    assert bad.returncode == 2


async def test_enum_labels_column_order_and_functions_are_compared(
        dsn: str, migrations_dir: Path) -> None:
    add_migration(migrations_dir, "006_moods", "tenant",
                  "CREATE TYPE mood AS ENUM ('happy', 'sad');"
                  " CREATE FUNCTION score(x integer) RETURNS integer LANGUAGE sql IMMUTABLE"
                  " AS 'SELECT x * 2';")
    await migrated_fleet(dsn, migrations_dir, [*SLUGS, "golf"])
    await execute(
        dsn,
        "ALTER TYPE tenant_acme.mood ADD VALUE 'angry'",
        "ALTER TABLE tenant_bravo.users RENAME COLUMN bio TO bio_old",
        "ALTER TABLE tenant_bravo.users ADD COLUMN bio text",
        "ALTER TABLE tenant_bravo.users DROP COLUMN avatar_url",
        "ALTER TABLE tenant_bravo.users DROP COLUMN bio_old",
        "ALTER TABLE tenant_bravo.users ADD COLUMN avatar_url varchar(500)",
        "CREATE INDEX idx_users_avatar ON tenant_bravo.users(avatar_url)",
        "DROP FUNCTION tenant_corp.score(integer)",
        "CREATE FUNCTION tenant_corp.score(x integer) RETURNS bigint LANGUAGE sql IMMUTABLE"
        " AS 'SELECT x * 2'",
        "CREATE OR REPLACE FUNCTION tenant_delta.score(x integer) RETURNS integer"
        " LANGUAGE sql IMMUTABLE AS 'SELECT x * 3'",
    )
    columns = await fetchval(dsn, "SELECT string_agg(attname, ', ' ORDER BY attnum) "
                                  "FROM pg_attribute WHERE attrelid = 'tenant_echo.users'::regclass"
                                  " AND attnum > 0 AND NOT attisdropped")
    names = str(columns).split(", ")
    assert names[-2:] == ["avatar_url", "bio"]
    moved = ", ".join([*names[:-2], "bio", "avatar_url"])
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift()
        by_files = await engine.structural_drift(against="migrations")

    assert report.alike == ("tenant_echo", "tenant_fox", "tenant_golf")
    assert report.lines() == [
        "tenant_acme: type mood is enum ('happy', 'sad', 'angry'), reference enum ('happy', 'sad')",
        f"tenant_bravo: table users has columns ({moved}), reference columns ({columns})",
        "tenant_corp: function score(x integer) returns bigint, reference integer",
        "tenant_delta: function score(x integer) has another body",
    ]
    # what the files build (enum, function, column order) is what the untouched have
    assert by_files.alike == ("tenant_echo", "tenant_fox", "tenant_golf")


def test_a_function_and_a_table_say_each_way_they_differ() -> None:
    reference = {("function", "score(x integer)"): "returns integer; language sql; immutable; "
                                                   "body 1b",
                 ("table", "users"): "columns (id, email, bio)",
                 ("table", "notes"): "columns (id, body)"}
    drifted = {("function", "score(x integer)"): "returns bigint; language sql; stable; body 2c",
               ("table", "users"): 'columns (id, bio, email, "Nick name")',
               ("table", "notes"): "columns (id, body, pinned)"}
    assert [d.describe() for d in differences(drifted, reference)] == [
        "function score(x integer) returns bigint, reference integer, and is stable, "
        "reference immutable, and has another body",
        # notes only gained a column (said by the column's own item); users' also moved
        'table users has columns (id, bio, email, "Nick name"), reference columns (id, email, '
        'bio)',
    ]


async def test_domains_composite_types_and_procedures_are_compared(
        dsn: str, migrations_dir: Path) -> None:
    add_migration(migrations_dir, "006_public_mood", "public",
                  "CREATE TYPE mood AS ENUM ('happy', 'sad');")
    add_migration(migrations_dir, "007_money", "tenant",
                  "CREATE DOMAIN positive AS integer CHECK (VALUE > 0);"
                  " CREATE TYPE money_amount AS (amount numeric(12,2), currency text);"
                  " CREATE PROCEDURE touch() LANGUAGE sql AS 'SELECT 1';"
                  " ALTER TABLE users ADD COLUMN mood public.mood;")
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    await execute(
        dsn,
        "ALTER DOMAIN tenant_acme.positive DROP CONSTRAINT positive_check",
        "ALTER DOMAIN tenant_acme.positive ADD CONSTRAINT positive_check CHECK (VALUE >= 0)",
        "ALTER TYPE tenant_bravo.money_amount ADD ATTRIBUTE note text",
        "CREATE PROCEDURE tenant_corp.cleanup() LANGUAGE sql AS 'SELECT 1'",
        "CREATE OR REPLACE PROCEDURE tenant_delta.touch() LANGUAGE sql AS 'SELECT 2'",
    )
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift()
        by_files = await engine.structural_drift(against="migrations")

    assert report.alike == ("tenant_echo", "tenant_fox")
    assert report.lines() == [
        "tenant_acme: type positive is domain over integer CHECK ((VALUE >= 0)), "
        "reference domain over integer CHECK ((VALUE > 0))",
        "tenant_bravo: type money_amount is composite (amount numeric(12,2), currency text, "
        "note text), reference composite (amount numeric(12,2), currency text)",
        "tenant_corp: extra procedure cleanup()",
        "tenant_delta: procedure touch() has another body",
    ]
    # the scratch schema reads public's enum as the fleet does (`mood`, not `public.mood`)
    assert by_files.alike == ("tenant_echo", "tenant_fox")


async def test_a_tenant_that_only_numbers_its_columns_otherwise_is_alike(
        dsn: str, migrations_dir: Path) -> None:
    # acme had a column added and dropped by hand before the next migration: its columns
    # carry other numbers (the catalog's fingerprint tells it apart), yet they read the
    # same, in the same order, with the same indexes: no drift
    await migrated_fleet(dsn, migrations_dir, ["acme", "bravo", "corp"])
    await execute(dsn, "ALTER TABLE tenant_acme.users ADD COLUMN scratch int",
                  "ALTER TABLE tenant_acme.users DROP COLUMN scratch")
    add_migration(migrations_dir, "006_nicknames", "tenant",
                  "ALTER TABLE users ADD COLUMN nickname text DEFAULT 'friend' NOT NULL;"
                  " CREATE INDEX idx_users_nickname ON users (nickname)")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        await engine.migrate("tenants")
        fingerprints, _ = await structure.read_fingerprints(
            engine.pool, ["tenant_acme", "tenant_bravo", "tenant_corp"])
        report = await engine.structural_drift()
        by_files = await engine.structural_drift(against="migrations")
    assert fingerprints["tenant_acme"] != fingerprints["tenant_bravo"] \
        == fingerprints["tenant_corp"]
    assert report.ok and report.alike == ("tenant_acme", "tenant_bravo", "tenant_corp")
    assert by_files.ok and len(by_files.alike) == 3
    # and a real difference on top of it is still found, and said once
    await execute(dsn, "ALTER TABLE tenant_acme.users ALTER COLUMN nickname DROP DEFAULT")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift()
    assert report.lines() == [
        "tenant_acme: users.nickname is text not null, reference text not null default "
        "'friend'::text"]


async def test_identity_and_generated_columns_are_compared(dsn: str, migrations_dir: Path) -> None:
    add_migration(migrations_dir, "006_invoices", "tenant",
                  "CREATE TABLE invoices (id integer GENERATED ALWAYS AS IDENTITY,"
                  " net numeric, gross numeric GENERATED ALWAYS AS (net * 1.2) STORED)")
    await migrated_fleet(dsn, migrations_dir, ["acme", "bravo", "corp"])
    await execute(dsn,
                  "ALTER TABLE tenant_acme.invoices ALTER COLUMN id SET GENERATED BY DEFAULT",
                  "ALTER TABLE tenant_bravo.invoices DROP COLUMN gross",
                  "ALTER TABLE tenant_bravo.invoices ADD COLUMN gross numeric"
                  " GENERATED ALWAYS AS (net * 1.25) STORED")
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift(against="migrations")
    assert report.alike == ("tenant_corp",)
    assert report.lines() == [
        "tenant_acme: invoices.id is integer not null generated by default as identity,"
        " reference integer not null generated always as identity",
        "tenant_bravo: invoices.gross is numeric generated always as ((net * 1.25)) stored,"
        " reference numeric generated always as ((net * 1.2)) stored",
    ]


async def test_foreign_keys_are_compared_by_what_they_do(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme", "bravo", "corp", "delta"])
    fk = "repositories_owner_id_fkey"
    await execute(
        dsn,
        f"ALTER TABLE tenant_acme.repositories DROP CONSTRAINT {fk}",
        f"ALTER TABLE tenant_acme.repositories ADD CONSTRAINT {fk} FOREIGN KEY (owner_id)"
        " REFERENCES tenant_acme.users(id) ON DELETE CASCADE",
        f"ALTER TABLE tenant_bravo.repositories DROP CONSTRAINT {fk}",
        f"ALTER TABLE tenant_bravo.repositories ADD CONSTRAINT {fk} FOREIGN KEY (owner_id)"
        " REFERENCES tenant_bravo.users(id) NOT VALID",
    )
    async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
        report = await engine.structural_drift()
    assert report.alike == ("tenant_corp", "tenant_delta")
    assert report.lines() == [
        f"tenant_acme: constraint repositories.{fk} is 'FOREIGN KEY (owner_id) REFERENCES"
        " users(id) ON DELETE CASCADE', reference 'FOREIGN KEY (owner_id) REFERENCES users(id)'",
        f"tenant_bravo: constraint repositories.{fk} is 'FOREIGN KEY (owner_id) REFERENCES"
        " users(id) NOT VALID', reference 'FOREIGN KEY (owner_id) REFERENCES users(id)'",
    ]


async def test_lanes_that_fail_together_raise_the_servers_error_not_a_group(
        dsn: str, migrations_dir: Path) -> None:
    import asyncpg

    await migrated_fleet(dsn, migrations_dir, ["acme"])
    # every statement is cancelled before it can finish: both lanes fail at once
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=3,
                                     server_settings={"statement_timeout": "1"})
    try:
        with pytest.raises(asyncpg.QueryCanceledError):
            await structure.read_fingerprints(
                pool, [f"tenant_s{i}" for i in range(20000)], ["tenant_acme"])
    finally:
        await pool.close()
