"""A fleet over several databases on two real servers: the suite's shared one (unix
socket) and the private one (TCP, scram passwords). Every assertion reads each
server's own state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from archify_core import (
    ConfigurationError,
    Database,
    Fleet,
    Notice,
    Outcome,
    TenantExistsError,
    fleet_databases,
    hookimpl,
    load_fleet_file,
)
from archify_core.embedded import with_database
from archify_core.engine import AUTO_CONCURRENCY
from archify_core.events import Event
from archify_core.fleet import place, server_of
from tests.conftest import _run_admin
from tests.fleet import add_migration, ledger_versions, register_tenants
from tests.reliability.conftest import PrivateServer
from tests.reliability.helpers import PYTHON, ROOT, clean_env
from tests.reliability.test_server_lost import crash_safe, started_again

TENANT_VERSIONS = ["002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]


@pytest.fixture
def second_dsn(server_dsn: str) -> Iterator[str]:
    """Another database on the shared server."""
    name = f"fleet_b_{abs(hash(server_dsn)) % 10_000}"
    _run_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
               f'CREATE DATABASE "{name}"')
    yield with_database(server_dsn, name)
    _run_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def databases(dsn: str, second_dsn: str, private_dsn: str) -> list[Database]:
    return fleet_databases({"eu": {"dsn": dsn}, "us": {"dsn": second_dsn},
                            "ap": {"dsn": private_dsn, "concurrency": 3}})


async def _spread(databases: list[Database], migrations: Path, per_database: int
                  ) -> dict[str, list[str]]:
    """Public migrated everywhere, `per_database` tenants registered in each database."""
    async with Fleet(databases, migrations, load_entry_points=False) as fleet:
        assert (await fleet.migrate("public")).ok
    slugs = {}
    for d in databases:
        slugs[d.name] = [f"{d.name}{i:03d}" for i in range(per_database)]
        if per_database:
            await register_tenants(d.dsn, slugs[d.name])
    return slugs


async def _ledger_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = "
                                   "'schema_migrations' AND schemaname LIKE 'tenant_%'")
    finally:
        await conn.close()


async def _ledgers(dsn: str, slugs: list[str]) -> set[tuple[str, ...]]:
    return {tuple(await ledger_versions(dsn, f"tenant_{s}")) for s in slugs}


async def test_one_rollout_migrates_every_database(
    databases: list[Database], migrations_dir: Path
) -> None:
    slugs = await _spread(databases, migrations_dir, 12)
    seen: list[tuple[str | None, str]] = []

    class Plugin:
        @hookimpl
        def archify_before_schema(self, schema: str, database: str | None) -> None:
            seen.append((database, schema))

    async with Fleet(databases, migrations_dir, load_entry_points=False,
                     plugins=[Plugin()]) as fleet:
        assert fleet.engines["ap"].concurrency <= 3  # its own bound
        # eu and us share one server: together they take what one engine alone would
        assert fleet.engines["eu"].concurrency + fleet.engines["us"].concurrency \
            <= AUTO_CONCURRENCY
        report = await fleet.migrate("tenants")
    assert report.ok and not report.unreachable
    assert report.summary()["migrated"] == 36 and report.summary()["databases"] == 3
    for d in databases:
        assert await _ledgers(d.dsn, slugs[d.name]) == {tuple(TENANT_VERSIONS)}
        assert {r.database for r in report.databases[d.name].schemas} == {d.name}
    assert {(db, s.removeprefix("tenant_")[:2]) for db, s in seen} == {
        ("eu", "eu"), ("us", "us"), ("ap", "ap")}


async def test_a_wrong_password_is_one_database_reported_once(
    databases: list[Database], migrations_dir: Path, private_server: PrivateServer
) -> None:
    slugs = await _spread(databases, migrations_dir, 5)
    wrong = private_server.dsn(databases[2].dsn.rsplit("/", 1)[1], password="not-it")
    broken = [*databases[:2], Database("ap", wrong)]
    notices: list[Event] = []
    async with Fleet(broken, migrations_dir, load_entry_points=False,
                     on_event=notices.append) as fleet:
        report = await fleet.migrate("all")
    assert not report.ok
    assert list(report.unreachable) == ["ap"]
    assert "not-it" not in json.dumps(report.to_dict())
    assert "password" in report.unreachable["ap"]
    for d in databases[:2]:
        assert await _ledgers(d.dsn, slugs[d.name]) == {tuple(TENANT_VERSIONS)}
    assert await _ledger_count(databases[2].dsn) == 0  # untouched
    assert not any("not-it" in e.message for e in notices if isinstance(e, Notice))


async def test_placement_and_a_slug_taken_anywhere(
    databases: list[Database], migrations_dir: Path
) -> None:
    assert place({"a": 4, "b": 3}, {"a": 2, "b": 1}) == "a"  # 2 per weight < 3
    assert place({"a": 1, "b": 1}, {"a": 1, "b": 1}) == "a"
    assert server_of("postgresql://u:p@db1:6432/x") == ("db1", "6432")
    assert server_of("postgresql://u@/x?host=/run/pg") == ("/run/pg", "5432")
    await _spread(databases, migrations_dir, 0)
    weighted = [Database(d.name, d.dsn, weight=w) for d, w in zip(databases, (1, 1, 2),
                                                                    strict=True)]
    placed: list[str] = []
    async with Fleet(weighted, migrations_dir, load_entry_points=False) as fleet:
        for i in range(8):
            where, tenant = await fleet.create_tenant(f"new{i}", migrate=False)
            placed.append(where)
        with pytest.raises(TenantExistsError, match="already exists, in database"):
            await fleet.create_tenant("new3", database="eu")
        chosen, _ = await fleet.create_tenant("pinned", database="us", migrate=False)
        assert chosen == "us"
        dropped_from, _ = await fleet.drop_tenant("new0")
    assert placed.count("ap") == 4 and placed.count("eu") == placed.count("us") == 2
    counts = {}
    for d in databases:
        conn = await asyncpg.connect(d.dsn)
        try:
            counts[d.name] = await conn.fetchval("SELECT count(*) FROM public.tenants")
        finally:
            await conn.close()
    assert counts == {"eu": 2 - (dropped_from == "eu"), "us": 3 - (dropped_from == "us"),
                      "ap": 4 - (dropped_from == "ap")}


async def test_a_server_stopped_mid_rollout_stops_only_its_databases(
    databases: list[Database], migrations_dir: Path, private_server: PrivateServer,
) -> None:
    add_migration(migrations_dir, "006_slow", "tenant", "SELECT pg_sleep(0.05);")
    versions = [*TENANT_VERSIONS, "006_slow"]
    await crash_safe(databases[2].dsn)
    slugs = await _spread(databases, migrations_dir, 40)

    async def stop_soon() -> None:
        await anyio.sleep(1.0)
        await anyio.to_thread.run_sync(private_server.stop)

    with started_again(private_server):
        async with Fleet(databases, migrations_dir, load_entry_points=False,
                         server_wait=1, concurrency=2) as fleet, anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            report = await fleet.migrate("tenants")
        private_server.start()
    assert not report.ok
    for d in databases[:2]:
        assert report.databases[d.name].ok
        assert await _ledgers(d.dsn, slugs[d.name]) == {tuple(versions)}
    ap = report.databases["ap"]
    assert any(r.outcome in (Outcome.FAILED, Outcome.SKIPPED) for r in ap.schemas)
    async with Fleet(databases, migrations_dir, load_entry_points=False) as fleet:
        again = await fleet.migrate("tenants")  # a re-run finishes the job
    assert again.ok and again.summary()["migrated"] > 0
    assert await _ledgers(databases[2].dsn, slugs["ap"]) == {tuple(versions)}


def _write_fleet(tmp_path: Path, databases: list[Database]) -> Path:
    path = tmp_path / "archify.toml"
    path.write_text("".join(f'[databases.{d.name}]\ndsn_env = "FLEET_{d.name.upper()}"\n'
                            for d in databases))
    return path


def test_an_archify_toml_without_databases_is_not_a_fleet(tmp_path: Path) -> None:
    from archify_core import find_fleet_file

    (tmp_path / "archify.toml").write_text('[lint]\nallow = ["drop"]\n')
    assert find_fleet_file(None, {}, tmp_path) is None
    (tmp_path / "archify.toml").write_text('[databases.eu]\ndsn = "postgresql://h/db"\n')
    assert find_fleet_file(None, {}, tmp_path) == tmp_path / "archify.toml"


def test_the_fleet_file_and_its_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "archify.toml"
    path.write_text('[databases.eu]\ndsn = "postgresql://a:secret@h/db"\nweight = 2\n'
                    '[databases.us]\ndsn_env = "US_URL"\nconcurrency = 4\n')
    eu, us = load_fleet_file(path, {"US_URL": "postgresql://u@h/us"})
    assert (eu.name, eu.weight, us.concurrency, us.dsn) == ("eu", 2.0, 4, "postgresql://u@h/us")
    assert "secret" not in repr(eu)
    for text, needle in [
        ('[databases.us]\ndsn_env = "NOPE"\n', "databases.us.dsn_env: the environment "
                                                "variable NOPE is not set"),
        ('[databases.us]\ndsn = "x"\ndsn_env = "Y"\n', "exactly one of dsn and dsn_env"),
        ('[databases.us]\ndsn = "x"\ncolour = 1\n', "unknown key 'colour'"),
        ('[databases.us]\ndsn = "x"\nweight = 0\n', "weight must be a number > 0"),
        ('[databases.US]\ndsn = "x"\n', "a database name is lowercase"),
        ("[databases]\n", "names no databases"),
        ("[databases.us\n", "is not valid TOML"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigurationError, match=needle) as caught:
            load_fleet_file(path, {})
        assert str(path) in str(caught.value)


async def test_the_cli_over_a_fleet_file(
    databases: list[Database], migrations_dir: Path, tmp_path: Path,
    private_server: PrivateServer,
) -> None:
    slugs = await _spread(databases, migrations_dir, 4)
    fleet_file = _write_fleet(tmp_path, databases)
    env = {**clean_env(), **{f"FLEET_{d.name.upper()}": d.dsn for d in databases}}

    def archify(*args: str) -> tuple[int, str, str]:
        import subprocess

        done = subprocess.run([PYTHON, "-m", "archify_core", "--migrations",
                               str(migrations_dir), *args], capture_output=True, text=True,
                              cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        assert private_server.password not in done.stdout + done.stderr
        return done.returncode, done.stdout, done.stderr

    code, out, err = archify("all", "--database", "eu", "--database", "ap")  # archify.toml here
    assert code == 0, err
    assert "eu:" in out and "ap:" in out and "3 databases" not in out
    assert await _ledgers(databases[0].dsn, slugs["eu"]) == {tuple(TENANT_VERSIONS)}
    assert await _ledger_count(databases[1].dsn) == 0
    code, out, err = archify("status", "--json", "--fleet", str(fleet_file))
    assert code == 0, err
    status = json.loads(out)
    assert list(status["databases"]) == ["eu", "us", "ap"]
    assert {t["slug"] for t in status["databases"]["us"]["tenants"]} == set(slugs["us"])
    code, out, err = archify("create-tenant", "fresh", "--no-migrate")
    assert code == 0 and "fresh" in out, err
    code, out, err = archify("create-tenant", "fresh", "--no-migrate")
    assert code == 2 and "already exists, in database" in err
    code, out, err = archify("all", "--database", "nowhere")
    assert code == 2 and "no database 'nowhere'" in err
    code, out, err = archify("create-tenant", "two", "--database", "eu", "--database", "us")
    assert code == 2 and "give --database once" in err
    code, out, err = archify("drift")  # one database at a time, named
    assert code == 2 and "archify drift works on one database" in err and out == ""
    code, out, err = archify("drift", "--database", "eu")
    assert code in (0, 1) and "reference" in out + err and "Traceback" not in err, (out, err)
