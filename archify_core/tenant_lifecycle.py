"""Creating and dropping tenants, each as one unit.

Creation: schema, ledger, migrations, seed, registry row.

Everything runs in one transaction on one connection, so a failure at any
step leaves no schema, no ledger and no registry row behind.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import pluggy

from . import digest, ledger
from .errors import (
    ConfigurationError,
    RegistryMissingError,
    TenantCreationError,
    TenantExistsError,
    TenantNotFoundError,
)
from .execution import ExecutionOptions
from .migration import MigrationSet, Scope
from .plugins import call_hook
from .quoting import REGISTRY_TABLE
from .sql import (
    CreationChunk,
    creation_chunks,
    drop_schema_sql,
    quote_literal,
    transaction_prelude,
)
from .tenants import schema_for

# What creating a tenant depends on, in one round trip: the registry's columns (NULL
# when there is none) and the digest's state (digest.prepare).
_CREATION_SHAPE = f"SELECT {ledger.REGISTRY_COLUMNS} AS registry_columns, ready.*" \
                  f" FROM ({digest.READY}) ready"
# The registry's columns a tenant's row fills, where the registry has them.
ROW_COLUMNS = ("slug", "name", "schema_name")


async def create_tenant(
    conn: asyncpg.Connection,
    migrations: MigrationSet,
    pm: pluggy.PluginManager,
    slug: str,
    name: str | None,
    *,
    admin_email: str | None,
    migrate: bool,
    options: ExecutionOptions,
) -> ledger.Tenant:
    """Five round trips when every migration is SQL and the seed hook sends nothing (a
    sign-up waits for each on a remote server): the registry's and the digest's state;
    BEGIN; the schema, its ledger and every migration; the registry row; COMMIT."""
    schema = schema_for(slug)
    name = tenant_name(slug, name)
    shape = await conn.fetchrow(_CREATION_SHAPE)
    if shape["registry_columns"] is None:
        raise RegistryMissingError()
    options = replace(options, digest=await digest.prepare(conn, state=shape))
    chunks = creation_sql(migrations, slug, migrate=migrate, options=options)
    register = registration_sql(slug, name, set(shape["registry_columns"]))
    step = "creating the schema"
    try:
        async with conn.transaction():
            for chunk in chunks:
                step = f"migration {chunk.python.version}" if chunk.python else "the SQL"
                await _run_chunk(conn, chunk, slug, schema)
            if migrate:
                step = "the archify_seed_admin hook"
                await call_hook(pm, "archify_seed_admin", conn=conn, slug=slug, schema=schema,
                                name=name, admin_email=admin_email)
            step = "registering it in public.tenants"
            await conn.execute(_registering_last(register))
    except asyncpg.UniqueViolationError as exc:
        if step.startswith("registering"):
            raise TenantExistsError(
                f"tenant {slug!r} is already registered in public.tenants"
            ) from None
        raise TenantCreationError(slug, step, exc) from exc
    except (TenantExistsError, TenantCreationError):
        raise
    except Exception as exc:
        raise TenantCreationError(slug, step, exc) from exc
    return ledger.Tenant(slug, schema, name)


def creation_sql(
    migrations: MigrationSet, slug: str, *, migrate: bool, options: ExecutionOptions
) -> list[CreationChunk]:
    """What `create_tenant` sends before the seed hook and the registry row: the schema,
    its ledger (tracked when `options.digest`) and every tenant migration (pure)."""
    to_apply = migrations.for_kind(Scope.TENANT) if migrate else ()
    return creation_chunks(schema_for(slug), to_apply, digest=options.digest,
                           **options.timeouts)


def creation_dry_run(migrations: MigrationSet, slug: str, name: str | None, *, migrate: bool,
                     options: ExecutionOptions) -> list[str]:
    """What `create_tenant` sends, in order, with the registry's usual columns (pure;
    `--dry-run` prints it)."""
    chunks = creation_sql(migrations, slug, migrate=migrate, options=options)
    return ["BEGIN;",
            *(c.sql if c.python is None else
              f"-- Python migration {c.python.version}: await upgrade(conn)" for c in chunks),
            *(["-- the archify_seed_admin hook"] if migrate else []),
            _registering_last(registration_sql(slug, tenant_name(slug, name))),
            "COMMIT;"]


def _registering_last(register: str) -> str:
    """The last statements before COMMIT: the registry row, and RESET ALL, so that what the
    migrations or the seed hook SET for the session (a plain SET, set_config(..., false))
    does not stay on the pooled connection (a rollback undoes it by itself)."""
    return f"{register}RESET ALL;"


def tenant_name(slug: str, name: str | None) -> str:
    """The name a tenant is registered with (its slug when none is given), refused before
    anything runs when PostgreSQL text cannot hold it."""
    if name is not None and "\x00" in name:
        raise ConfigurationError(f"the name of tenant {slug!r} contains a NUL character, "
                                 "which PostgreSQL text cannot hold")
    return name or slug


def registration_sql(slug: str, name: str, columns: set[str] | None = None) -> str:
    """The tenant's row in public.tenants, filling those of ROW_COLUMNS the registry has
    (`columns`; None: all of them) (pure)."""
    values = {"slug": slug, "name": name, "schema_name": schema_for(slug)}
    names = [c for c in ROW_COLUMNS if columns is None or c in columns]
    return (f"INSERT INTO {REGISTRY_TABLE} ({', '.join(names)}) VALUES "
            f"({', '.join(quote_literal(values[c]) for c in names)});\n")


def drop_sql(slug: str, *, options: ExecutionOptions) -> str:
    """What `drop_tenant` sends, in its order (pure; `--dry-run` prints it)."""
    schema = schema_for(slug)
    return (transaction_prelude(schema, **options.timeouts)
            + f"DELETE FROM public.tenants WHERE slug = {quote_literal(slug)};\n"
            + f"{drop_schema_sql(schema)};\n"
            + (digest.forget_sql(schema) if options.digest else ""))


async def _run_chunk(conn: asyncpg.Connection, chunk: CreationChunk, slug: str,
                     schema: str) -> None:
    """Run one part of the creation, naming the failing migration when it fails."""
    if chunk.python is not None:
        assert chunk.python.upgrade_py is not None
        await chunk.python.upgrade_py(conn)
        return
    try:
        await conn.execute(chunk.sql)
    except asyncpg.DuplicateSchemaError:
        raise TenantExistsError(
            f"tenant {slug!r} already exists: schema {schema} is there") from None
    except asyncpg.PostgresError as exc:
        raise TenantCreationError(slug, _failing_step(exc, list(chunk.spans)), exc) from exc


def _failing_step(exc: asyncpg.PostgresError, spans: list[tuple[int, int, str]]) -> str:
    position = getattr(exc, "position", None)
    if position:
        offset = int(position) - 1
        for start, end, version in spans:
            if start <= offset < end:
                return f"migration {version}"
    if spans:
        return f"the tenant migrations ({spans[0][2]} .. {spans[-1][2]})"
    return "creating the schema"


async def drop_tenant(
    conn: asyncpg.Connection, slug: str, *, options: ExecutionOptions
) -> ledger.Tenant:
    """Drop tenant `slug`'s schema (with everything in it) and its registry row, in one
    transaction, under the schema's advisory lock so no rollout is migrating it."""
    schema = schema_for(slug)
    keeps_digest = await conn.fetchval(f"SELECT {digest.WRITABLE}")  # never set up on a drop
    async with conn.transaction():
        await conn.execute(transaction_prelude(schema, **options.timeouts))
        deleted = None
        columns = await ledger.registry_columns(conn)
        if columns is not None:
            # registries adopted from older tools may have no name column
            name = "name::text" if "name" in columns else "NULL"
            deleted = await conn.fetchrow(
                f"DELETE FROM public.tenants WHERE slug = $1 RETURNING {name} AS name", slug)
        exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
        if deleted is None and not exists:
            raise TenantNotFoundError(
                f"tenant {slug!r} does not exist: not in public.tenants and no schema {schema}")
        if exists:
            await conn.execute(drop_schema_sql(schema))
        if keeps_digest:
            await conn.execute(digest.forget_sql(schema))
    return ledger.Tenant(slug, schema, deleted["name"] if deleted else None)
