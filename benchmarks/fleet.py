"""The fleets the scenarios start from, built fast and untimed in big SQL batches.

Each scenario names a migration set (a subset of the example migrations), what
every tenant has applied before the run and what it must have after. The fleet
is built by hand — schema, ledger, objects, ledger rows, registry rows — in
batches of schemas per round trip over a couple of connections, so 10,000
tenants take a fraction of what a migration tool would.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg

from archify_core import digest, load_migrations
from archify_core.migration import Migration, MigrationSet, Scope
from archify_core.sql import create_ledger_sql, ledger_name, quote_ident, quote_literal

EXAMPLES = Path(__file__).resolve().parent.parent / "migrations"
BUILD_BATCH = 50  # schemas per round trip (and transaction) while building
BUILD_CONNECTIONS = 2
# Catalogs that DDL churns; vacuumed after each reset.
CATALOGS = ("pg_catalog.pg_class", "pg_catalog.pg_attribute", "pg_catalog.pg_type",
            "pg_catalog.pg_depend", "pg_catalog.pg_index", "pg_catalog.pg_constraint",
            "pg_catalog.pg_namespace", "pg_catalog.pg_attrdef", "pg_catalog.pg_trigger",
            "public.tenants", digest.DIGEST_TABLE)


@dataclass(frozen=True)
class Scenario:
    name: str
    files: tuple[str, ...]  # version prefixes of the example migrations in this set
    before: tuple[str, ...]  # tenant versions applied before the run
    after: tuple[str, ...]  # tenant versions every schema must have after it
    fleet: str  # which prepared fleet (database) it runs on

    def migrations_dir(self, root: Path) -> Path:
        """A folder holding just this scenario's migration files."""
        target = root / f"migrations_{self.fleet}"
        if not target.exists():
            target.mkdir(parents=True)
            for path in sorted(EXAMPLES.glob("*.py")):
                if path.name[:3] in self.files:
                    shutil.copy(path, target / path.name)
        return target


FULL = ("001", "002", "003", "004", "005")
ALL_TENANT = ("002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs")
SCENARIOS = {
    s.name: s for s in (
        Scenario("rollout", ("001", "002", "003"), ("002_create_tenant_tables",),
                 ("002_create_tenant_tables", "003_add_user_avatar"), "rollout"),
        Scenario("bootstrap", FULL, (), ALL_TENANT, "bootstrap"),
        # the everyday deploy: one new tenant migration over a fleet archify manages
        Scenario("deploy", FULL, ALL_TENANT[:2], ALL_TENANT, "deploy"),
        Scenario("noop", FULL, ALL_TENANT, ALL_TENANT, "current"),
        Scenario("status", FULL, ALL_TENANT, ALL_TENANT, "current"),
        Scenario("drift", FULL, ALL_TENANT, ALL_TENANT, "current"),
        Scenario("create-tenant", FULL, ALL_TENANT, ALL_TENANT, "current"),
    )
}


def slug(i: int) -> str:
    return f"t{i:06d}"


def tenant_schema(i: int) -> str:
    return f"tenant_{slug(i)}"


def applied_sql(schema: str, migrations: list[Migration]) -> str:
    """Each migration's SQL and its ledger row, with search_path set to `schema`."""
    parts = [f"SET LOCAL search_path TO {quote_ident(schema)};\n"]
    for m in migrations:
        parts.append(f"{m.upgrade_sql.rstrip()}\n;\n")
        parts.append(f"INSERT INTO {ledger_name(schema)} (version, checksum) VALUES "
                     f"({quote_literal(m.version)}, {quote_literal(m.checksum)});\n")
    return "".join(parts)


def tenant_build_sql(schema: str, migrations: list[Migration]) -> str:
    """A tenant as archify leaves it: its ledger tracked by the digest (digest.py)."""
    return (f"CREATE SCHEMA {quote_ident(schema)};\n" + create_ledger_sql(schema)
            + applied_sql(schema, migrations) + digest.track_ledger_sql(schema))


async def build_fleet(dsn: str, migrations: MigrationSet, before: tuple[str, ...], n: int) -> None:
    """Public fully migrated with `migrations`; `n` registered tenants with `before` applied."""
    public = list(migrations.for_kind(Scope.PUBLIC))
    tenant = [m for m in migrations.for_kind(Scope.TENANT) if m.version in before]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("BEGIN;\n" + create_ledger_sql("public") + applied_sql("public", public)
                           + digest.SETUP_SQL + "COMMIT;")
    finally:
        await conn.close()
    await _in_batches(dsn, n, lambda schema: tenant_build_sql(schema, tenant))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO public.tenants (slug, name, schema_name) "
            "SELECT s, 'Tenant ' || i, 'tenant_' || s FROM generate_series(0, $1) i,"
            " LATERAL (SELECT 't' || lpad(i::text, 6, '0') AS s) x", n - 1
        )
        await conn.execute(f"VACUUM ANALYZE {', '.join(CATALOGS)}")
    finally:
        await conn.close()
    await settle(dsn, n)


async def settle(dsn: str, n: int) -> None:
    """Read every ledger once and checkpoint, untimed: the first reader of freshly
    written rows sets their hint bits (dirtying every ledger page), and a checkpoint
    due after the build would land in the first timed run, whichever tool has it."""
    await _in_batches(dsn, n, lambda schema: f"SELECT 1 FROM {ledger_name(schema)};")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:  # --dsn with a role that may not: skip it
        pass
    finally:
        await conn.close()


async def _in_batches(dsn: str, n: int, script: Callable[[str], str]) -> None:
    """Run script(schema) for every tenant, BUILD_BATCH schemas per transaction and round
    trip, over BUILD_CONNECTIONS connections."""
    batches = iter([range(s, min(s + BUILD_BATCH, n)) for s in range(0, n, BUILD_BATCH)])

    async def worker() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for batch in batches:
                await conn.execute(
                    "BEGIN;\n" + "".join(script(tenant_schema(i)) for i in batch) + "COMMIT;")
        finally:
            await conn.close()

    async with anyio.create_task_group() as tg:
        for _ in range(BUILD_CONNECTIONS):
            tg.start_soon(worker)


async def reset_fleet(dsn: str, migrations: MigrationSet, before: tuple[str, ...], n: int) -> None:
    """Back to the scenario's starting state after a run, in place: every migration applied
    since is reverted with its own downgrade SQL and its ledger row deleted. Much faster than
    copying a template database (see docs/performance.md), the catalogs are vacuumed so
    repeats do not pile up dead catalog rows, and the fleet is settled (see settle) so the
    next timed run does not pay for hint bits on the deleted ledger rows or a checkpoint."""
    undo = [m for m in reversed(migrations.for_kind(Scope.TENANT)) if m.version not in before]

    def script(schema: str) -> str:
        versions = ", ".join(quote_literal(m.version) for m in undo)
        # the digest is recomputed at the end (the baselines do not keep it), so the
        # trigger is told to skip these deletes
        return (f"SET LOCAL search_path TO {quote_ident(schema)};\n"
                f"SET LOCAL {digest.WRITER_SETTING} = 'on';\n"
                + "".join(f"{m.downgrade_sql.rstrip()}\n;\n" for m in undo)
                + f"DELETE FROM {ledger_name(schema)} WHERE version IN ({versions});\n"
                + digest.refresh_sql(schema))

    if undo:
        await _in_batches(dsn, n, script)
    conn = await asyncpg.connect(dsn)
    try:
        created = [r[0] for r in await conn.fetch(
            "SELECT schema_name FROM public.tenants WHERE slug LIKE 'bench\\_%'")]
        for start in range(0, len(created), BUILD_BATCH):
            await conn.execute("".join(f"DROP SCHEMA {quote_ident(s)} CASCADE;\n"
                                       for s in created[start:start + BUILD_BATCH]))
        await conn.execute("DELETE FROM public.tenants WHERE slug LIKE 'bench\\_%'")
        await conn.execute(f"VACUUM ANALYZE {', '.join(CATALOGS)}")
    finally:
        await conn.close()
    await settle(dsn, n)


def load(scenario: Scenario, root: Path) -> MigrationSet:
    return load_migrations(scenario.migrations_dir(root))
