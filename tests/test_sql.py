"""SQL text building and slug validation: pure."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from archify_core import InvalidSlugError, load_migrations, schema_for, validate_slug
from archify_core.migration import Migration, Scope
from archify_core.sql import (
    creation_chunks,
    is_recorded_already,
    millis,
    quote_ident,
    quote_literal,
    upgrade_script,
)
from archify_core.steps import ExecutionOptions
from archify_core.tenant_lifecycle import creation_sql, drop_sql
from tests.conftest import EXAMPLE_MIGRATIONS


def test_identifiers_and_literals_are_always_quoted() -> None:
    assert quote_ident('a"b') == '"a""b"'
    assert quote_literal("it's") == "'it''s'"
    with pytest.raises(ValueError):
        quote_ident("a\x00b")


def test_upgrade_script_is_one_transaction_scoped_to_its_schema() -> None:
    m = Migration("003_x", Scope.TENANT, "d", Path("003_x.py"), "ALTER TABLE users ADD c int")
    script = upgrade_script("tenant_acme", m, lock_timeout=2.5,
                            statement_timeout=None, runner_wait=60)
    assert script.startswith("BEGIN;") and script.endswith("COMMIT;")
    assert "set_config('search_path', '\"tenant_acme\"', true)" in script
    assert "set_config('lock_timeout', '2500ms', true)" in script
    assert "SET LOCAL lock_timeout = '60000ms';" in script  # waiting for another runner
    assert "RESET ALL" not in script  # the migration sets no session state
    assert "pg_advisory_xact_lock" in script
    assert script.index("pg_advisory_xact_lock") < script.index("ALTER TABLE users")
    # the ledger row comes first: a second runner stops on its unique version
    assert script.index("INSERT INTO") < script.index("ALTER TABLE users")


@pytest.mark.parametrize("sql", [
    "SET statement_timeout = 0;\nUPDATE users SET name = 'x';",
    "SELECT set_config('statement_timeout', '1234', false)",
    "DO $$ BEGIN PERFORM pg_catalog.set_config('work_mem', '8MB', false); END $$",
    "DO $$ BEGIN EXECUTE 'set work_mem = ''8MB'''; END $$",
])
def test_a_migration_that_may_set_session_state_is_followed_by_reset_all(sql: str) -> None:
    m = Migration("003_x", Scope.TENANT, "d", Path("003_x.py"), sql)
    script = upgrade_script("tenant_acme", m, lock_timeout=1,
                            statement_timeout=None, runner_wait=60)
    assert script.endswith("RESET ALL;\nCOMMIT;")


@pytest.mark.parametrize("slug", ["acme", "a", "a1_b2", "x" * 56, "select", "pg_admin"])
def test_valid_slugs(slug: str) -> None:
    assert schema_for(slug) == f"tenant_{slug}"


@pytest.mark.parametrize(("slug", "reason"), [
    ("", "empty"), ("Acme", "'A'"), ("ac me", "' '"), ("a;drop", "';'"), ("a'b", "\"'\""),
    ('a"b', "'\"'"), ("1abc", "start with a lowercase letter"), ("_abc", "start with"),
    ("café", "non-ASCII"), ("x" * 57, "63-byte"), ("a-b", "'-'"),
])
def test_invalid_slugs_are_refused_with_a_reason(slug: str, reason: str) -> None:
    with pytest.raises(InvalidSlugError) as caught:
        validate_slug(slug)
    assert reason in str(caught.value)


def test_tenant_dry_runs_show_what_creation_and_drop_send() -> None:
    options = ExecutionOptions()
    drop = drop_sql("acme", options=options)
    assert "SET LOCAL lock_timeout = '120000ms'" in drop  # the real runner wait, not 0
    assert (drop.index("pg_advisory_xact_lock")
            < drop.index("DELETE FROM public.tenants WHERE slug = 'acme'")
            < drop.index('DROP SCHEMA "tenant_acme" CASCADE'))
    [chunk] = creation_sql(load_migrations(EXAMPLE_MIGRATIONS), "acme", migrate=True,
                           options=options)
    assert "SET LOCAL lock_timeout = '120000ms'" in chunk.sql
    assert chunk.sql.count("INSERT INTO \"tenant_acme\".schema_migrations") == 3
    with pytest.raises(InvalidSlugError):
        drop_sql("Robert'); DROP TABLE tenants;--", options=options)


def test_tiny_timeouts_round_up_never_to_no_limit() -> None:
    assert millis(0.0001) == "'1ms'" and millis(2.5) == "'2500ms'"
    assert millis(None) == millis(0) == "'0ms'"


def test_creation_drops_concurrently_only_from_non_transactional_migrations() -> None:
    keep = Migration("002_a", Scope.TENANT, "d", Path("002_a.py"),
                     "INSERT INTO notes VALUES ('use CREATE INDEX CONCURRENTLY later')")
    strip = Migration("003_b", Scope.TENANT, "d", Path("003_b.py"),
                      "CREATE INDEX CONCURRENTLY idx ON notes (v)", transactional=False)
    [chunk] = creation_chunks("tenant_acme", (keep, strip), lock_timeout=1,
                              statement_timeout=None, runner_wait=1)
    assert "'use CREATE INDEX CONCURRENTLY later'" in chunk.sql
    assert "CREATE INDEX idx ON notes (v)" in chunk.sql


@pytest.mark.parametrize(("detail", "recorded"), [
    ("Key (version)=(003_x) already exists.", True),
    ("Schlüssel »(version)=(003_x)« existiert bereits.", True),  # lc_messages = de_DE
    ("Key (version)=(003_xy) already exists.", False),  # another version
])
def test_another_runners_ledger_row_is_told_by_the_errors_fields_not_its_language(
    detail: str, recorded: bool
) -> None:
    error = SimpleNamespace(sqlstate="23505", schema_name="tenant_acme",
                            table_name="schema_migrations", detail=detail)
    assert is_recorded_already(error, "tenant_acme", "003_x") is recorded
    # adoption's own failure is raised again without the table's name (upgrade_ledger_sql)
    adoption = SimpleNamespace(sqlstate="23505", schema_name=None, table_name=None,
                               detail="Key (version)=(003_x) is duplicated.")
    assert not is_recorded_already(adoption, "tenant_acme", "003_x")
