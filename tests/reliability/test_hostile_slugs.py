"""Hostile tenant slugs and tampered registry rows: a specific error, a non-zero exit,
nothing changed; and no identifier ever reaches SQL unquoted."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from archify_core import Engine, InvalidSlugError, Outcome
from tests.conftest import EXAMPLE_MIGRATIONS
from tests.reliability.conftest import PrivateServer
from tests.reliability.helpers import assert_clean_error, cli

HOSTILE_SLUGS = [
    "Robert'); DROP TABLE public.tenants;--",
    'acme"; DROP SCHEMA public CASCADE; --',
    "a;b",
    "two words",
    "UPPER",
    "Acme",
    "caf\u00e9",
    "\u0430cme",  # Cyrillic a
    "emoji\U0001f600",
    "a" * 57,
    "b" * 64,
    "x" * 200,
    "",
    " ",
    "_leading",
    "1starts_with_digit",
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "back\\slash",
    "dollar$$quote",
    "per%cent",
    "dash-ed",
    "dot.ted",
    "slash/ed",
    "pg_catalog\"",
    "public;",
]
# Reserved words and pg_ prefixes are valid slugs: the schema is always tenant_<slug>,
# which is neither a keyword nor in PostgreSQL's reserved pg_ namespace, and is quoted.
ODD_BUT_VALID = ["select", "drop", "user", "table", "pg_catalog", "pg_toast", "public", "a" * 56]


async def _snapshot(dsn: str) -> tuple[list, list]:
    conn = await asyncpg.connect(dsn)
    try:
        schemas = await conn.fetch("SELECT nspname FROM pg_namespace ORDER BY 1")
        tenants = await conn.fetch("SELECT * FROM public.tenants ORDER BY id")
    finally:
        await conn.close()
    return [r[0] for r in schemas], [tuple(r) for r in tenants]


async def _fleet(dsn: str) -> None:
    async with Engine(dsn, EXAMPLE_MIGRATIONS, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await engine.create_tenant("acme", "Acme")


async def test_hostile_slugs_are_rejected_by_every_api_and_change_nothing(dsn: str) -> None:
    await _fleet(dsn)
    before = await _snapshot(dsn)
    async with Engine(dsn, EXAMPLE_MIGRATIONS, load_entry_points=False) as engine:
        for slug in HOSTILE_SLUGS:
            with pytest.raises(InvalidSlugError) as caught:
                await engine.create_tenant(slug)
            assert caught.value.slug == slug
            with pytest.raises(InvalidSlugError):
                await engine.migrate([slug])
            with pytest.raises(InvalidSlugError):
                await engine.migrate(["acme", slug])  # nothing runs, not even acme
            with pytest.raises(InvalidSlugError):
                await engine.status(tenants=[slug])
    assert await _snapshot(dsn) == before


@pytest.mark.parametrize("slug", ["Robert'); DROP TABLE public.tenants;--", "a" * 64,
                                  "caf\u00e9", "UPPER", "two words"])
def test_hostile_slugs_on_the_cli_exit_2_without_traceback(dsn: str, slug: str) -> None:
    import anyio

    anyio.run(_fleet, dsn)
    before = anyio.run(_snapshot, dsn)
    for command in (["create-tenant", slug], ["tenant", slug], ["create-tenant", slug,
                                                                "--no-migrate"]):
        result = cli("--migrations", str(EXAMPLE_MIGRATIONS), *command, dsn=dsn)
        assert_clean_error(result, "invalid tenant slug")
    assert anyio.run(_snapshot, dsn) == before


async def test_odd_but_valid_slugs_stay_inside_their_quoted_schema(dsn: str) -> None:
    await _fleet(dsn)
    async with Engine(dsn, EXAMPLE_MIGRATIONS, load_entry_points=False) as engine:
        for slug in ODD_BUT_VALID:
            tenant = await engine.create_tenant(slug)
            assert tenant.schema == f"tenant_{slug}"
        report = await engine.migrate("all")
        status = await engine.status()
    assert report.ok
    assert all(not t.pending for t in status.tenants)
    conn = await asyncpg.connect(dsn)
    try:
        for slug in ODD_BUT_VALID:
            assert await conn.fetchval("SELECT to_regclass($1)", f'"tenant_{slug}".users')
        assert await conn.fetchval("SELECT to_regclass('pg_catalog.users')") is None
        assert await conn.fetchval("SELECT to_regclass('public.users')") is None
    finally:
        await conn.close()


TAMPERED = {
    # slug -> schema_name written straight into public.tenants by someone else
    "evil_public": "public",
    "evil_other": "tenant_corp",  # a real schema the row does not own
    "evil_inject": 'tenant_x"; DROP TABLE public.tenants; --',
    "evil_catalog": "pg_catalog",
}


async def test_tampered_registry_rows_are_refused_by_name(dsn: str) -> None:
    await _fleet(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA tenant_corp")
        for slug, schema in TAMPERED.items():
            await conn.execute("INSERT INTO public.tenants (slug, name, schema_name) "
                               "VALUES ($1, $1, $2)", slug, schema)
        await conn.execute('CREATE SCHEMA "tenant_Bad Slug"')
        await conn.execute("INSERT INTO public.tenants (slug, name, schema_name) "
                           "VALUES ('Bad Slug', 'x', 'tenant_Bad Slug')")
        await conn.execute("CREATE SCHEMA tenant_fresh")
        await conn.execute("INSERT INTO public.tenants (slug, name, schema_name) "
                           "VALUES ('fresh', 'x', 'tenant_fresh')")
    finally:
        await conn.close()
    before = await _snapshot(dsn)
    async with Engine(dsn, EXAMPLE_MIGRATIONS, load_entry_points=False) as engine:
        report = await engine.migrate("tenants")
        status = await engine.status()

    failed = {r.slug: r.failure.message for r in report.failed}
    assert set(failed) == {*TAMPERED, "Bad Slug"}
    for slug, schema in TAMPERED.items():
        assert f"registry row says schema {schema!r}" in failed[slug]
        assert "fix public.tenants.schema_name" in failed[slug]
    assert "invalid slug" in failed["Bad Slug"]
    by_slug = {r.slug: r.outcome for r in report.schemas}
    assert by_slug["fresh"] is Outcome.MIGRATED and by_slug["acme"] is Outcome.UP_TO_DATE
    problems = {t.slug: t.problem for t in status.tenants if t.problem}
    assert set(problems) == set(failed)
    after = await _snapshot(dsn)
    assert after[0] == before[0]  # no schema created or dropped
    conn = await asyncpg.connect(dsn)
    try:  # nothing was applied to the schemas the rows pointed at
        assert await conn.fetchval("SELECT to_regclass('public.users')") is None
        assert await conn.fetchval("SELECT to_regclass('tenant_corp.schema_migrations')") is None
        assert await conn.fetchval('SELECT to_regclass(\'"tenant_Bad Slug".schema_migrations\')') \
            is None
        assert await conn.fetchval("SELECT count(*) FROM tenant_acme.schema_migrations") == 3
    finally:
        await conn.close()


async def test_no_identifier_reaches_the_server_unquoted(
    private_server: PrivateServer, private_dsn: str, tmp_path: Path
) -> None:
    """Log every statement the server receives while tenants with keyword slugs are
    created, migrated and read; each mention of their schemas must be quoted."""
    database = private_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(private_server.dsn())
    try:
        await admin.execute(f'ALTER DATABASE "{database}" SET log_statement = \'all\'')
    finally:
        await admin.close()
    log = private_server.pgdata / "log"
    start = log.stat().st_size
    slugs = ["select", "drop", "pg_user"]
    async with Engine(private_dsn, EXAMPLE_MIGRATIONS, load_entry_points=False) as engine:
        assert (await engine.migrate("public")).ok
        await engine.create_tenant(slugs[0])
        for slug in slugs[1:]:
            await engine.create_tenant(slug, migrate=False)
        assert (await engine.migrate("all")).ok
        await engine.status()
        await engine.migrate(slugs)
    with log.open("rb") as handle:
        handle.seek(start)
        text = handle.read().decode("utf-8", "replace")
    mentions = [m for slug in slugs for m in re.finditer(rf"tenant_{slug}\b", text)]
    assert len(mentions) > 20, "the statements were not logged"
    unquoted = [text[max(0, m.start() - 40):m.end() + 10] for m in mentions
                if text[m.start() - 1] not in "\"'"]
    assert unquoted == []
