"""Hooks: specs and docs in step, plain and async plugins, what a raising hook does,
and every way a plugin gets in (argument, entry point, --plugin), against PostgreSQL."""

from __future__ import annotations

import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest

import archify_core
from archify_core import (
    ConfigurationError,
    Engine,
    Outcome,
    TenantCreationError,
    hookimpl,
    hookspecs,
)
from archify_core.plugins import DEFAULTS, hookspecs_names, make_plugin_manager
from tests.fleet import add_migration, fetchval, keep_only, ledger_versions
from tests.plugin_fixtures.seed_marker import MARKER_EMAIL
from tests.test_cli import archify

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
PUBLIC = ("001_create_public_tables", "004_add_tenant_billing", "005_add_audit_logs")
TENANT = ("002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs")


# -- specs and docs ----------------------------------------------------------------


def _documented() -> dict[str, str]:
    """Hook name -> the first python code block under its `### archify_*` heading."""
    blocks = {}
    for section in re.split(r"^#+ ", DOCS.read_text(), flags=re.M):
        heading, _, body = section.partition("\n")
        if re.fullmatch(r"archify_\w+", heading.strip()):
            code = re.search(r"```python\n(.*?)```", body, re.S)
            assert code, f"docs/hooks.md: no signature block under {heading}"
            blocks[heading.strip()] = code.group(1)
    return blocks


def _signature_of(name: str, block: str) -> str:
    """The documented def compiled like the spec (postponed annotations), as a string."""
    namespace: dict[str, Any] = {}
    exec(compile(f"from __future__ import annotations\n{block}", str(DOCS), "exec"), namespace)
    return str(inspect.signature(namespace[name]))


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    documented = _documented()
    assert sorted(documented) == sorted(hookspecs_names())
    for name in hookspecs_names():
        spec = getattr(hookspecs, name)
        assert _signature_of(name, documented[name]) == str(inspect.signature(spec)), name
        assert inspect.getdoc(spec), f"{name} has no docstring"


def test_hookimpl_is_exported_from_the_package_root() -> None:
    assert archify_core.hookimpl is hookspecs.hookimpl
    assert "hookimpl" in archify_core.__all__
    assert {"archify_before_schema", "archify_after_schema", "archify_on_failure",
            "archify_seed_admin"} <= set(hookspecs_names())


# -- plugins used by the tests ---------------------------------------------------------


async def _make_audit_table(dsn: str) -> None:
    await fetchval(dsn, "CREATE SCHEMA audit")
    await fetchval(dsn, "CREATE TABLE audit.hook_calls (hook text, schema_name text, detail text)")


async def _audit_rows(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT hook, schema_name, detail FROM audit.hook_calls")
    finally:
        await conn.close()
    return sorted((r["hook"], r["schema_name"], r["detail"]) for r in rows)


class AsyncAudit:
    """`async def` hooks that write every call to audit.hook_calls on their own connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def _write(self, hook: str, schema: str, detail: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("INSERT INTO audit.hook_calls VALUES ($1, $2, $3)",
                               hook, schema, detail)
        finally:
            await conn.close()

    @hookimpl
    async def archify_before_schema(self, schema: str, pending: tuple[str, ...]) -> None:
        await self._write("before_schema", schema, ",".join(pending))

    @hookimpl
    async def archify_on_failure(self, schema: str, version: str | None, failure: Any) -> None:
        await self._write("on_failure", schema, f"{version}: {failure.error_type}")

    @hookimpl
    async def archify_after_schema(self, result: Any) -> None:
        await self._write("after_schema", result.schema, result.outcome.value)

    @hookimpl
    async def archify_rollout_finished(self, report: Any) -> None:
        await self._write("rollout_finished", "", f"{report.target}: {len(report.schemas)}")


class Recorder:
    """Plain hooks that take every argument and record the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def archify_rollout_started(self, target: str, schemas: int, dry_run: bool) -> None:
        self.calls.append(("rollout_started", target, schemas, dry_run))

    @hookimpl
    def archify_before_schema(self, schema: str, slug: str | None,
                              pending: tuple[str, ...]) -> None:
        self.calls.append(("before_schema", schema, slug, pending))

    @hookimpl
    def archify_on_failure(self, schema: str, slug: str | None, version: str | None,
                           error: BaseException, failure: Any) -> None:
        self.calls.append(("on_failure", schema, slug, version, type(error).__name__,
                           failure.message))

    @hookimpl
    def archify_after_schema(self, result: Any) -> None:
        self.calls.append(("after_schema", result.schema, result.outcome,
                           [a.version for a in result.applied]))

    @hookimpl
    def archify_rollout_finished(self, report: Any) -> None:
        self.calls.append(("rollout_finished", report.target, report.ok))

    def of(self, hook: str) -> list[tuple[Any, ...]]:
        return sorted((c for c in self.calls if c[0] == hook), key=repr)


class PlainGate:
    """A before_schema gate that refuses one tenant."""

    refuse = "frozen"

    @hookimpl
    def archify_before_schema(self, slug: str | None) -> None:
        if slug == self.refuse:
            raise RuntimeError(f"tenant {slug} is frozen")


class AsyncGate(PlainGate):
    @hookimpl
    async def archify_before_schema(self, slug: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        super().archify_before_schema(slug)


class BrokenNotifier:
    """Notification hooks that always raise."""

    @hookimpl
    def archify_on_failure(self) -> None:
        raise RuntimeError("pager is down")

    @hookimpl
    async def archify_after_schema(self) -> None:
        raise RuntimeError("metrics are down")


async def _fleet(engine: Engine, *slugs: str) -> None:
    """public migrated, and `slugs` registered with nothing applied yet."""
    await engine.migrate("public")
    for slug in slugs:
        await engine.create_tenant(slug, migrate=False)


# -- rollouts ----------------------------------------------------------------------------


async def test_plain_and_async_hooks_get_their_arguments(dsn: str, migrations_dir: Path) -> None:
    await _make_audit_table(dsn)
    recorder = Recorder()
    async with Engine(dsn, migrations_dir, plugins=[recorder, AsyncAudit(dsn)]) as engine:
        await engine.migrate("public")
        await engine.create_tenant("acme", migrate=False)
        await engine.create_tenant("corp", migrate=False)
        report = await engine.migrate("tenants")
    assert report.ok
    assert await _audit_rows(dsn) == sorted([
        ("before_schema", "public", ",".join(PUBLIC)),
        ("after_schema", "public", "migrated"),
        ("rollout_finished", "", "public: 1"),
        ("before_schema", "tenant_acme", ",".join(TENANT)),
        ("before_schema", "tenant_corp", ",".join(TENANT)),
        ("after_schema", "tenant_acme", "migrated"),
        ("after_schema", "tenant_corp", "migrated"),
        ("rollout_finished", "", "tenants: 2"),
    ])
    assert recorder.of("rollout_started") == [("rollout_started", "public", 1, False),
                                              ("rollout_started", "tenants", 2, False)]
    assert recorder.of("before_schema") == [
        ("before_schema", "public", None, PUBLIC),
        ("before_schema", "tenant_acme", "acme", TENANT),
        ("before_schema", "tenant_corp", "corp", TENANT),
    ]
    assert recorder.of("after_schema") == [
        ("after_schema", "public", Outcome.MIGRATED, list(PUBLIC)),
        ("after_schema", "tenant_acme", Outcome.MIGRATED, list(TENANT)),
        ("after_schema", "tenant_corp", Outcome.MIGRATED, list(TENANT)),
    ]
    assert recorder.of("on_failure") == []
    assert recorder.calls[-1] == ("rollout_finished", "tenants", True)


@pytest.mark.parametrize("gate", [PlainGate(), AsyncGate()], ids=["plain", "async"])
async def test_raising_before_schema_fails_only_that_schema(
    dsn: str, migrations_dir: Path, gate: object
) -> None:
    await _make_audit_table(dsn)
    recorder = Recorder()
    plugins = [recorder, AsyncAudit(dsn), gate]
    async with Engine(dsn, migrations_dir, plugins=plugins) as engine:
        await _fleet(engine, "acme", "frozen", "corp")
        report = await engine.migrate("tenants")
    outcomes = {r.slug: r.outcome for r in report.schemas}
    assert outcomes == {"acme": Outcome.MIGRATED, "frozen": Outcome.FAILED,
                        "corp": Outcome.MIGRATED}
    failure = report.failed[0].failure
    assert failure is not None and failure.version is None
    assert failure.message == "RuntimeError in a before_schema hook: tenant frozen is frozen"
    assert failure.error_type == "RuntimeError"
    # nothing ran in the refused schema; the others are complete
    assert await ledger_versions(dsn, "tenant_frozen") == []
    assert await fetchval(dsn, "SELECT to_regclass('tenant_frozen.users')") is None
    assert await ledger_versions(dsn, "tenant_acme") == list(TENANT)
    assert await ledger_versions(dsn, "tenant_corp") == list(TENANT)
    assert ("on_failure", "tenant_frozen", "None: RuntimeError") in await _audit_rows(dsn)
    assert ("after_schema", "tenant_frozen", "failed") in await _audit_rows(dsn)
    assert recorder.of("on_failure") == [
        ("on_failure", "tenant_frozen", "frozen", None, "RuntimeError", failure.message)]


async def test_raising_on_failure_never_hides_the_original_error(
    dsn: str, migrations_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_migration(migrations_dir, "006_breaks", "tenant", "SELECT * FROM no_such_table;")
    await _make_audit_table(dsn)
    # registered last, so pluggy calls the broken plugin first: the audit must still run
    plugins = [AsyncAudit(dsn), BrokenNotifier()]
    async with Engine(dsn, migrations_dir, plugins=plugins) as engine:
        await _fleet(engine, "acme")
        with caplog.at_level(logging.ERROR, logger="archify"):
            report = await engine.migrate("tenants")
    [result] = report.failed
    assert result.failure is not None
    assert result.failure.version == "006_breaks"
    assert result.failure.sqlstate == "42P01"
    assert result.failure.error_type == "UndefinedTableError"
    assert "no_such_table" in result.failure.message and "pager" not in result.failure.message
    assert [a.version for a in result.applied] == list(TENANT)
    assert await ledger_versions(dsn, "tenant_acme") == list(TENANT)
    rows = await _audit_rows(dsn)
    assert ("on_failure", "tenant_acme", "006_breaks: UndefinedTableError") in rows
    assert ("after_schema", "tenant_acme", "failed") in rows
    logged = [r.getMessage() for r in caplog.records]
    assert any("archify_on_failure" in m and "BrokenNotifier" in m for m in logged), logged
    assert any("archify_after_schema" in m for m in logged), logged


# -- seed_admin and the default plugin ----------------------------------------------------


class AsyncSeed:
    @hookimpl
    async def archify_seed_admin(self, conn: asyncpg.Connection, slug: str, schema: str,
                                 name: str, admin_email: str | None) -> None:
        assert conn.is_in_transaction()
        await conn.execute("INSERT INTO users (email, full_name, is_admin) VALUES ($1, $2, true)",
                           admin_email, f"{name}/{slug}/{schema}")


class PlainSeed:
    @hookimpl
    def archify_seed_admin(self, conn: asyncpg.Connection, slug: str, schema: str,
                           name: str, admin_email: str | None) -> Any:
        """A plain function that returns an awaitable: the engine awaits it."""
        return conn.execute("INSERT INTO users (email, full_name, is_admin) VALUES ($1, $2, true)",
                            admin_email, f"{name}/{slug}/{schema}")


@pytest.mark.parametrize("seed", [PlainSeed(), AsyncSeed()], ids=["plain", "async"])
async def test_seed_admin_writes_inside_the_tenant_transaction(
    dsn: str, migrations_dir: Path, seed: object
) -> None:
    async with Engine(dsn, migrations_dir, plugins=[seed]) as engine:
        engine.pm.set_blocked(DEFAULTS)
        await engine.migrate("public")
        await engine.create_tenant("acme", "Acme Inc", admin_email="boss@acme.io")
    assert await fetchval(dsn, "SELECT full_name FROM tenant_acme.users "
                               "WHERE email = 'boss@acme.io' AND is_admin") == "Acme Inc/acme/tenant_acme"
    # written by the transaction that registered the tenant
    assert await fetchval(dsn, "SELECT (SELECT xmin FROM tenant_acme.users)::text = "
                               "(SELECT xmin FROM public.tenants WHERE slug = 'acme')::text") is True


class PlainBoom:
    @hookimpl
    def archify_seed_admin(self) -> None:
        raise RuntimeError("mail server down")


class AsyncBoom:
    @hookimpl
    async def archify_seed_admin(self, conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO users (email) VALUES ('first@x.io')")
        raise RuntimeError("mail server down")


@pytest.mark.parametrize("boom", [PlainBoom(), AsyncBoom()], ids=["plain", "async"])
async def test_raising_seed_admin_leaves_no_tenant(
    dsn: str, migrations_dir: Path, boom: object
) -> None:
    async with Engine(dsn, migrations_dir, plugins=[boom]) as engine:
        await engine.migrate("public")
        with pytest.raises(TenantCreationError, match="archify_seed_admin hook.*mail server down"):
            await engine.create_tenant("acme", admin_email="boss@acme.io")
        assert await engine.list_tenants() == []
    assert await fetchval(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'") == 0
    assert await fetchval(dsn, "SELECT count(*) FROM public.tenants") == 0


async def test_default_seed_adds_the_admin_and_can_be_replaced(
    dsn: str, migrations_dir: Path
) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await engine.create_tenant("acme", "Acme", admin_email="boss@acme.io")
        await engine.create_tenant("quiet")  # no email: no admin row
    assert await fetchval(dsn, "SELECT full_name || ':' || is_admin FROM tenant_acme.users "
                               "WHERE email = 'boss@acme.io'") == "Acme admin:true"
    assert await fetchval(dsn, "SELECT count(*) FROM tenant_quiet.users") == 0

    async with Engine(dsn, migrations_dir, plugins=[PlainSeed()]) as engine:
        engine.pm.set_blocked(DEFAULTS)
        await engine.create_tenant("corp", "Corp", admin_email="boss@corp.io")
    assert await fetchval(dsn, "SELECT string_agg(full_name, ',') FROM tenant_corp.users") == \
        "Corp/corp/tenant_corp"

    manager = make_plugin_manager([PlainSeed()], load_entry_points=False, blocked=[DEFAULTS])
    assert manager.get_plugin(DEFAULTS) is None and manager.is_blocked(DEFAULTS)
    assert len(manager.hook.archify_seed_admin.get_hookimpls()) == 1


async def test_default_seed_refuses_an_email_it_cannot_store(
    dsn: str, migrations_dir: Path
) -> None:
    keep_only(migrations_dir, "001")
    add_migration(migrations_dir, "002_people", "tenant", "CREATE TABLE people (id int);")
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await engine.create_tenant("plain")
        with pytest.raises(TenantCreationError, match="no users table"):
            await engine.create_tenant("acme", admin_email="boss@acme.io")
    assert await fetchval(dsn, "SELECT string_agg(slug, ',') FROM public.tenants") == "plain"


# -- registering plugins ---------------------------------------------------------------------


ENTRY_POINT_PLUGIN = '''
from archify_core import hookimpl


@hookimpl
async def archify_seed_admin(conn, slug):
    await conn.execute("INSERT INTO users (email) VALUES ($1)", f"entry-point@{slug}.io")
'''


def _install_entry_point(site: Path) -> None:
    """A distribution on `site` (no pip) whose `archify` entry point is a module plugin."""
    info = site / "archify_ep_demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: archify-ep-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[archify]\nep_demo = archify_ep_demo\n")
    (site / "archify_ep_demo.py").write_text(ENTRY_POINT_PLUGIN)


async def test_entry_point_plugins_are_loaded(
    dsn: str, migrations_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_entry_point(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "archify_ep_demo", raising=False)
    async with Engine(dsn, migrations_dir) as engine:
        assert engine.pm.get_plugin("ep_demo") is not None
        await engine.migrate("public")
        await engine.create_tenant("acme")
    assert await fetchval(dsn, "SELECT email FROM tenant_acme.users") == "entry-point@acme.io"
    assert make_plugin_manager(load_entry_points=False).get_plugin("ep_demo") is None
    assert make_plugin_manager(blocked=["ep_demo"]).get_plugin("ep_demo") is None


def test_cli_plugin_option_registers_a_plugin(dsn: str, migrations_dir: Path) -> None:
    base = {"dsn": dsn, "migrations": migrations_dir}
    assert archify("public", **base).returncode == 0
    created = archify("--plugin", "tests.plugin_fixtures.seed_marker:plugin",
                      "create-tenant", "acme", "--admin-email", "boss@acme.io", **base)
    assert created.returncode == 0, created.stderr
    emails = anyio.run(fetchval, dsn, "SELECT string_agg(email, ',' ORDER BY email) "
                                      "FROM tenant_acme.users")
    assert emails == f"boss@acme.io,{MARKER_EMAIL}"  # the default seed and the plugin's

    missing = archify("--plugin", "tests.plugin_fixtures.nope", "status", **base)
    assert missing.returncode == 2
    assert "cannot load plugin 'tests.plugin_fixtures.nope'" in missing.stderr


# -- what a plugin may not do ------------------------------------------------------------------


class Typo:
    @hookimpl
    def archify_befor_schema(self) -> None: ...


class AsksTooMuch:
    @hookimpl
    def archify_after_schema(self, result: Any, tenant: Any) -> None: ...


class Wrapper:
    @hookimpl(wrapper=True)
    def archify_after_schema(self) -> Any:
        return (yield)


@pytest.mark.parametrize(("plugin", "reason"), [
    (Typo(), "unknown hook 'archify_befor_schema'"),
    (AsksTooMuch(), "(?s)tests.test_hooks.AsksTooMuch is not a valid.*archify_after_schema.*'tenant'"),
    (Wrapper(), "archify_after_schema is a hook wrapper"),
], ids=["typo", "unknown-argument", "wrapper"])
def test_invalid_plugins_are_refused_when_registered(plugin: object, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        make_plugin_manager([plugin], load_entry_points=False)


# -- per-migration and tenant lifecycle hooks, blocking from Engine and CLI ------------------


class Lifecycle:
    """after_migration (plain) and the tenant hooks (async, on their own connection)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.migrations: list[tuple[str, str, str]] = []

    @hookimpl
    def archify_after_migration(self, schema: str, slug: str | None, applied: Any,
                                direction: str) -> None:
        assert applied.duration_ms >= 0 and slug in (None, "acme")
        self.migrations.append((schema, applied.version, direction))

    async def _write(self, hook: str, tenant: Any, detail: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            # the registry row as another connection sees it: the change was committed
            registered = await conn.fetchval("SELECT count(*) FROM public.tenants WHERE slug = $1",
                                             tenant.slug)
            await conn.execute("INSERT INTO audit.hook_calls VALUES ($1, $2, $3)",
                               hook, tenant.schema, f"{detail} registered={registered}")
        finally:
            await conn.close()

    @hookimpl
    async def archify_tenant_created(self, tenant: Any, admin_email: str | None) -> None:
        await self._write("tenant_created", tenant, f"{tenant.name} {admin_email}")

    @hookimpl
    async def archify_tenant_dropped(self, tenant: Any) -> None:
        await self._write("tenant_dropped", tenant, tenant.slug)


class BrokenLifecycle:
    @hookimpl
    def archify_after_migration(self) -> None:
        raise RuntimeError("metrics are down")

    @hookimpl
    def archify_tenant_created(self) -> None:
        raise RuntimeError("welcome mail bounced")


async def test_migration_and_tenant_lifecycle_hooks(dsn: str, migrations_dir: Path) -> None:
    await _make_audit_table(dsn)
    lifecycle = Lifecycle(dsn)
    async with Engine(dsn, migrations_dir, plugins=[lifecycle, BrokenLifecycle()]) as engine:
        await engine.migrate("public")
        await engine.create_tenant("acme", "Acme", admin_email="boss@acme.io")
        assert (await engine.rollback(["acme"], steps=1)).ok
        await engine.drop_tenant("acme")
    assert lifecycle.migrations == [("public", v, "up") for v in PUBLIC] + [
        ("tenant_acme", "005_add_audit_logs", "down")]
    assert await ledger_versions(dsn, "public") == list(PUBLIC)  # a raising hook changed nothing
    assert await _audit_rows(dsn) == [
        ("tenant_created", "tenant_acme", "Acme boss@acme.io registered=1"),
        ("tenant_dropped", "tenant_acme", "acme registered=0"),
    ]


async def test_engine_option_blocks_the_default_seed(dsn: str, migrations_dir: Path) -> None:
    async with Engine(dsn, migrations_dir, plugins=[AsyncSeed()],
                      blocked_plugins=[DEFAULTS]) as engine:
        assert engine.pm.get_plugin(DEFAULTS) is None
        await engine.migrate("public")
        await engine.create_tenant("acme", "Acme", admin_email="boss@acme.io")
    assert await fetchval(dsn, "SELECT string_agg(full_name, ',') FROM tenant_acme.users") == \
        "Acme/acme/tenant_acme"


def test_cli_block_plugin_replaces_the_default_seed(dsn: str, migrations_dir: Path) -> None:
    base = {"dsn": dsn, "migrations": migrations_dir}
    assert archify("public", **base).returncode == 0
    created = archify("--block-plugin", DEFAULTS,
                      "create-tenant", "acme", "--admin-email", "boss@acme.io",
                      "--plugin", "tests.plugin_fixtures.seed_marker:plugin", **base)
    assert created.returncode == 0, created.stderr
    assert anyio.run(fetchval, dsn, "SELECT string_agg(email, ',') FROM tenant_acme.users") == \
        MARKER_EMAIL


class ErrorTypes:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    @hookimpl
    def archify_on_failure(self, error: BaseException) -> None:
        self.errors.append(error)


async def test_on_failure_gets_the_server_error_after_retries(
    dsn: str, migrations_dir: Path
) -> None:
    async with Engine(dsn, migrations_dir) as engine:
        await engine.migrate("public")
        await engine.create_tenant("acme")
    add_migration(migrations_dir, "006_add_column", "tenant",
                  "ALTER TABLE users ADD COLUMN nickname text;")
    seen = ErrorTypes()
    holder = await asyncpg.connect(dsn)
    try:
        async with (Engine(dsn, migrations_dir, plugins=[seen], lock_timeout=0.1,
                           retries=0) as engine, holder.transaction()):
            await holder.execute("LOCK TABLE tenant_acme.users IN ACCESS EXCLUSIVE MODE")
            report = await engine.migrate(["acme"])
    finally:
        await holder.close()
    assert report.failed[0].failure.sqlstate == "55P03"
    assert [type(e).__name__ for e in seen.errors] == ["LockNotAvailableError"]
    assert "006_add_column" not in await ledger_versions(dsn, "tenant_acme")
