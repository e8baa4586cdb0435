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
    RegistryMissingError,
    TenantCreationError,
    TenantExistsError,
    TenantNotFoundError,
)
from .execution import ExecutionOptions
from .migration import MigrationSet, Scope
from .plugins import call_hook
from .sql import (
    CreationChunk,
    creation_chunks,
    drop_schema_sql,
    quote_literal,
    transaction_prelude,
)
from .tenants import schema_for


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
    schema = schema_for(slug)
    name = name or slug
    if not await ledger.registry_exists(conn):
        raise RegistryMissingError()
    options = replace(options, digest=await digest.prepare(conn))
    chunks = creation_sql(migrations, slug, migrate=migrate, options=options)
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
            await _register(conn, slug, name, schema)
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
    # what the migrations or the seed hook set for the session (a plain SET,
    # set_config(..., false)) must not stay on the pooled connection
    await conn.execute("RESET ALL")
    return ledger.Tenant(slug, schema, name)


def creation_sql(
    migrations: MigrationSet, slug: str, *, migrate: bool, options: ExecutionOptions
) -> list[CreationChunk]:
    """What `create_tenant` sends before the seed hook and the registry row: schema,
    ledger (tracked when `options.digest`) and every tenant migration (pure;
    `--dry-run` prints it)."""
    to_apply = migrations.for_kind(Scope.TENANT) if migrate else ()
    return creation_chunks(schema_for(slug), to_apply, digest=options.digest,
                           **options.timeouts)


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


async def _register(conn: asyncpg.Connection, slug: str, name: str, schema: str) -> None:
    columns = await ledger.registry_columns(conn)
    values = {"slug": slug, "name": name, "schema_name": schema}
    names = [c for c in values if c in columns]
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    await conn.execute(
        f"INSERT INTO public.tenants ({', '.join(names)}) VALUES ({placeholders})",
        *(values[c] for c in names),
    )


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
        if await ledger.registry_exists(conn):
            # registries adopted from older tools may have no name column
            name = "name::text" if "name" in await ledger.registry_columns(conn) else "NULL"
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
