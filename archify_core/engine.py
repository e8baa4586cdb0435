"""The Engine: Archify's public async API. The CLI and Airflow operators call only this."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import asyncpg
import pluggy

from . import digest, ledger, structure
from .dsn import check_dsn, connection_error, redact
from .errors import (
    ConfigurationError,
    RegistryMissingError,
    TenantNotFoundError,
    UnfinishedMigrationError,
)
from .events import Event, Notice, RolloutFinished, RolloutStarted, SchemaFinished
from .execution import ExecutionOptions, RunContext
from .ledger import Queryable
from .loader import load_migrations
from .migration import MigrationSet, Scope
from .planning import SchemaPlan, SchemaState, plan_rollback, plan_schema, rollback_problem
from .plugins import call_hook_quietly, make_plugin_manager
from .quoting import LEDGER_TABLE, quote_ident
from .report import RolloutReport
from .rollout import Rollout, planned
from .server_watch import ServerWatch
from .status import FleetStatus, schema_status, schema_statuses
from .structural_drift import (
    StructuralDriftReport,
    check_against,
    compare,
    representatives,
)
from .tenant_lifecycle import create_tenant, drop_tenant
from .tenants import validate_slug

if TYPE_CHECKING:
    from .lint import LintConfig, LintReport
    from .lint.fleet import PendingWarnings

log = logging.getLogger("archify")

Target = str | Sequence[str]
# Without a concurrency of its own, an engine runs up to this many schemas at once, and
# never more than half of the server's free connection slots when it opens
# (Engine._fit_concurrency). On 2 cores 16 workers were ~4 % faster than 8 at 10,000
# tenants, and 24 no faster (docs/performance.md, "Concurrency").
AUTO_CONCURRENCY = 16
# Schemas whose steps one worker sends in one round trip, each still its own transaction
# (execution.apply_batch): the client's and the server's per-round-trip work is shared.
DEFAULT_BATCH_SIZE = 8


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook. Archify leaves no session state (SET LOCAL, xact locks, RESET ALL
    before COMMIT), so a released connection needs no reset round trip."""


class Engine:
    """Migrates `public` and every tenant schema of one database.

    Use it as an async context manager::

        async with Engine(dsn, migrations="migrations") as engine:
            report = await engine.migrate("all")
    """

    def __init__(
        self,
        dsn: str,
        migrations: str | Path | MigrationSet = "migrations",
        *,
        concurrency: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pool_size: int | None = None,
        lock_timeout: float | None = 5.0,
        statement_timeout: float | None = None,
        runner_wait: float | None = 120.0,
        retries: int = 3,
        retry_backoff: float = 0.5,
        server_wait: float = 60.0,
        allow_out_of_order: bool = False,
        plugins: Iterable[object] = (),
        load_entry_points: bool = True,
        blocked_plugins: Iterable[str] = (),
        on_event: Callable[[Event], None] | None = None,
        name: str | None = None,
        lint_config: LintConfig | None = None,
        warn_lint: bool = True,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, not {batch_size}")
        if pool_size is not None and pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, not {pool_size}")
        check_dsn(dsn)
        self.dsn = dsn
        self.name = name  # its database's name in a fleet (fleet.py); hooks and results say it
        self._migrations_source = migrations
        # None: sized to the server when the engine opens (see AUTO_CONCURRENCY)
        self._concurrency_given = concurrency is not None
        self.concurrency = concurrency or AUTO_CONCURRENCY
        self.batch_size = batch_size
        self.pool_size = pool_size or self.concurrency + 1
        self.options = ExecutionOptions(
            lock_timeout=lock_timeout, statement_timeout=statement_timeout,
            runner_wait=runner_wait, retries=retries, retry_backoff=retry_backoff,
            server_wait=server_wait,
        )
        self.allow_out_of_order = allow_out_of_order
        self.pm: pluggy.PluginManager = make_plugin_manager(
            plugins, load_entry_points=load_entry_points, blocked=blocked_plugins
        )
        self._handlers: list[Callable[[Event], None]] = [on_event] if on_event else []
        # None: the project's (archify.toml or pyproject.toml beside the migrations folder)
        self.lint_config = lint_config
        self.warn_lint = warn_lint
        self._pool: asyncpg.Pool | None = None
        self.migrations: MigrationSet = MigrationSet(())

    @property
    def sized_to_server(self) -> bool:
        """True when the concurrency was left to the engine (not given)."""
        return not self._concurrency_given

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        source = self._migrations_source
        # importing the files runs their code: off the event loop, which may be an app's
        self.migrations = (source if isinstance(source, MigrationSet)
                           else await anyio.to_thread.run_sync(load_migrations, source))
        # min_size=0: no connection floor for asyncpg to restore in the background (while
        # the server is away it would log a traceback per attempt); the rollout's own
        # ServerWatch waits for a lost server instead.
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=0, max_size=self.pool_size, reset=_keep_session,
            server_settings={"application_name": "archify"},
        )
        try:
            await self._fit_concurrency()  # the first connection: what connecting raises
        except Exception as exc:
            await self._pool.close()
            self._pool = None
            if isinstance(exc, asyncpg.PostgresError) and not isinstance(
                    exc, asyncpg.InvalidAuthorizationSpecificationError
                    | asyncpg.InvalidCatalogNameError | asyncpg.TooManyConnectionsError
                    | asyncpg.CannotConnectNowError | asyncpg.InvalidPasswordError):
                raise
            raise connection_error(exc, self.dsn) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("use the Engine inside `async with Engine(...) as engine:`")
        return self._pool

    def subscribe(self, handler: Callable[[Event], None]) -> None:
        """Receive every event this engine emits (progress bars, logs)."""
        self._handlers.append(handler)

    def _emit(self, event: Event) -> None:
        for handler in self._handlers:
            handler(event)

    def _watch(self) -> ServerWatch:
        """A watch on the server for one rollout: its workers wait for a lost server
        together, up to server_wait seconds (server_watch.py)."""
        async def probe() -> None:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            await conn.close()

        return ServerWatch(probe, redact(self.dsn), self._emit, self.options.server_wait)

    async def _fit_concurrency(self) -> None:
        """Never run more workers than the pool, or than the server has free slots for; a
        concurrency left to the engine takes at most half of the free slots (the rest are
        for the applications, and other runs)."""
        row = await self.pool.fetchrow(
            "SELECT current_setting('max_connections')::int AS max,"
            " current_setting('superuser_reserved_connections')::int AS reserved,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            " AS used"
        )
        free = row["max"] - row["reserved"] - row["used"]
        # one pool connection is already open; keep one for the fleet reads when the pool
        # allows (with a pool of 1, reads and the one worker take turns)
        share = free if self._concurrency_given else free // 2
        limit = max(1, min(self.pool_size - 1, share))
        if limit < self.concurrency and self._concurrency_given:
            why = (f"the server has {free} free connection slots (max_connections "
                   f"{row['max']}, {row['used']} in use, {row['reserved']} kept for "
                   "superusers)" if share <= self.pool_size - 1 else
                   f"the pool holds {self.pool_size} connections (--pool-size), one of them "
                   "for reading the fleet")
            self._emit(Notice(f"running {limit} schemas at a time, not the "
                              f"{self.concurrency} asked for: {why}"))
        self.concurrency = min(self.concurrency, limit)

    # -- reading ---------------------------------------------------------------

    async def status(self, tenants: Sequence[str] | None = None) -> FleetStatus:
        """What every schema (or the given tenants) has applied and has pending."""
        conn = self.pool  # as in migrate(): ledger batches are read on several connections
        public = schema_status(self.migrations, await ledger.read_public_state(conn))
        try:
            states = await ledger.read_tenant_states(conn, self._known_slugs(tenants),
                                                     self._known_ledgers())
        except RegistryMissingError:
            return FleetStatus(public, [], registry_exists=False)
        rows = []
        async with ledger.tenant_state_batches(conn, states) as batches:
            async for batch in batches:
                rows.extend(schema_statuses(self.migrations, batch))
        return FleetStatus(public, rows)

    async def structural_drift(
        self, against: str = "majority", tenants: Sequence[str] | None = None
    ) -> StructuralDriftReport:
        """Tenants whose schema's structure differs from the others' (against="majority":
        the largest group of alike tenants) or from what the tenant migrations build
        (against="migrations", in a scratch schema that is rolled back). Structure only:
        tables (and their column order), columns, indexes, constraints, sequences, views,
        functions and procedures, triggers, types (enums, domains, composite types)."""
        check_against(against)
        if against == "migrations":
            self._refuse_unfinished(Scope.TENANT)
        schemas = [t.schema for t in await ledger.list_tenants(self.pool)
                   if tenants is None or t.slug in tenants]
        fingerprints, structures = await self._read_structures(schemas)
        reference = None
        if against == "migrations":
            async with self.pool.acquire() as conn:
                reference = await structure.read_migrations_structure(
                    conn, self.migrations, self.options)
        return compare(fingerprints, structures, reference, against=against)

    async def _read_structures(
        self, schemas: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, structure.Structure]]:
        """Every schema's fingerprint, and the structure of one schema per fingerprint.
        The first schema by name stands for its fingerprint whatever it is, so its
        structure is read beside the fingerprints; then the others', if any."""
        fingerprints, structures = await structure.read_fingerprints(
            self.pool, schemas, structures_of=[min(schemas)] if schemas else [])
        others = [s for s in representatives(fingerprints) if s not in structures]
        if others:
            structures.update(await structure.read_structures(self.pool, others))
        return fingerprints, structures

    async def list_tenants(self) -> list[ledger.Tenant]:
        async with self.pool.acquire() as conn:
            return await ledger.list_tenants(conn)

    # -- migrating ---------------------------------------------------------------

    async def migrate(
        self, target: Target = "all", *, max_failures: int | None = None, dry_run: bool = False
    ) -> RolloutReport:
        """Apply pending migrations to `target`: "public", "tenants", "all" or a list of slugs.

        A failure stops its schema only. The report says, per schema, what was
        applied and what failed; `report.ok` is False if anything failed.
        """
        _check_max_failures(max_failures)
        include_public, slugs = _parse_target(target)
        if not dry_run:
            self._refuse_unfinished(
                *([Scope.PUBLIC] if include_public else []),
                *([Scope.TENANT] if slugs is not None or target in ("tenants", "all") else []))
        label = target if isinstance(target, str) else ",".join(slugs or ())
        report = RolloutReport(target=label, dry_run=dry_run)
        started = time.perf_counter()
        # Reads go through the pool one query at a time, never holding a connection
        # while workers wait for one: a pool of any size cannot deadlock.
        conn = self.pool
        tenant_states: list[SchemaState] = []
        if slugs is not None or target in ("tenants", "all"):
            tenant_states = await self._tenant_states(conn, slugs, required=not include_public)
        public = await ledger.read_public_state(conn) if include_public else None
        ctx = await self._run_context(dry_run)
        await self._started(label, len(tenant_states) + (1 if public else 0), dry_run)
        warnings = self._pending_warnings()
        if public is not None:
            public_plan = self._plan(public)
            if warnings is not None and public_plan.has_work:
                await warnings.warn(public_plan.pending)
            await self._run([public_plan], report, max_failures, ctx, dry_run)
            if not tenant_states and target == "all" and not dry_run:
                tenant_states = await self._tenant_states(conn, None, required=False)
        if tenant_states and not report.stopped_early:
            async with self._tenant_plans(conn, tenant_states, self._plan, ctx) as plans:
                await self._run(plans if warnings is None else warnings.watching(plans),
                                report, max_failures, ctx, dry_run)
        return await self._finished(report, started)

    def _pending_warnings(self) -> _LazyWarnings | None:
        """What warns (Notice events) about the lint findings of each pending migration
        before it first runs; linting loads only once something is pending."""
        if not self.warn_lint:
            return None
        return _LazyWarnings(self)

    async def lint(self, versions: Iterable[str] | None = None, *,
                   config: LintConfig | None = None) -> LintReport:
        """Lint the migration files (those of `versions`, or all) with the built-in rules
        and the plugins' (archify_lint_rules); each standing finding on a table says what
        the fleet stakes on it, read in one catalog query (docs/lint.md)."""
        from .lint.fleet import lint

        return await lint(self.migrations, self.pm, versions=versions,
                          config=config or self.lint_config, conn=self.pool)

    async def pending_lint(self) -> LintReport:
        """The lint findings of the migrations pending in any schema (for validate)."""
        status = await self.status()
        pending = {v for schema in [status.public, *status.tenants] for v in schema.pending}
        if not pending:
            from .lint.findings import LintReport

            return LintReport()
        return await self.lint(pending)

    def _refuse_unfinished(self, *kinds: Scope) -> None:
        """Before anything runs: a file not written yet must not stop a rollout half-way."""
        if kinds and (unfinished := self.migrations.unfinished(*kinds)):
            raise UnfinishedMigrationError([(m.path.name, m.unfinished or "")
                                            for m in unfinished])

    async def _started(self, label: str, schemas: int, dry_run: bool) -> None:
        self._emit(RolloutStarted(label, schemas, self.concurrency, dry_run))
        await call_hook_quietly(self.pm, "archify_rollout_started", target=label,
                                schemas=schemas, dry_run=dry_run)

    async def _finished(self, report: RolloutReport, started: float) -> RolloutReport:
        report.duration_s = time.perf_counter() - started
        self._emit(RolloutFinished(report))
        await call_hook_quietly(self.pm, "archify_rollout_finished", report=report)
        return report

    async def _tenant_states(
        self, conn: Queryable, slugs: list[str] | None, *, required: bool
    ) -> list[SchemaState]:
        try:
            states = await ledger.read_tenant_states(conn, slugs, self._known_ledgers())
        except RegistryMissingError:
            if required:
                raise
            return []
        if slugs is not None:
            missing = sorted(set(slugs) - {s.slug for s in states})
            if missing:
                raise TenantNotFoundError(
                    f"not registered in public.tenants: {', '.join(missing)}; "
                    "create them with `archify create-tenant SLUG` first"
                )
        return states

    def _known_ledgers(self) -> ledger.KnownLedgers:
        return digest.known_ledgers(self.migrations.for_kind(Scope.TENANT))

    async def _run_context(self, dry_run: bool) -> RunContext:
        """What a run's steps run with; one that writes keeps tenant ledgers' digests when
        this role may (creating the digest table first if needed, see digest.prepare)."""
        options = self.options
        if not dry_run:
            async with self.pool.acquire() as conn:
                keeps = await digest.prepare(conn, lambda message: self._emit(Notice(message)))
            options = replace(options, digest=keeps)
        return RunContext(options, self.pm, self._emit, self._watch(), self.name)

    def _plan(self, state: SchemaState) -> SchemaPlan:
        return plan_schema(self.migrations, state, allow_out_of_order=self.allow_out_of_order)

    @asynccontextmanager
    async def _tenant_plans(
        self, conn: Queryable, states: list[SchemaState],
        plan: Callable[[SchemaState], SchemaPlan], ctx: RunContext,
    ) -> AsyncIterator[AsyncIterator[SchemaPlan]]:
        """The plans of `states`, made as their ledgers arrive (read ahead of the work;
        a read that loses the server is made again once it answers)."""
        retry = ctx.watch.retrying if ctx.watch is not None else None
        async with ledger.tenant_state_batches(conn, states, retry=retry) as batches:

            async def plans() -> AsyncIterator[SchemaPlan]:
                async for batch in batches:
                    for state in batch:
                        yield plan(state)

            yield plans()

    async def _run(
        self, plans: Iterable[SchemaPlan] | AsyncIterator[SchemaPlan], report: RolloutReport,
        max_failures: int | None, ctx: RunContext, dry_run: bool,
    ) -> None:
        if dry_run:
            async for plan in _aiter(plans):
                result = planned(plan)
                result.database = self.name
                report.schemas.append(result)
                self._emit(SchemaFinished(result))
            return
        rollout = Rollout(self.pool, ctx, report, self.concurrency, max_failures,
                          self.batch_size)
        rollout._failures = len(report.failed)
        await rollout.run(_aiter(plans))
        for result in report.schemas:  # also those settled without a worker
            result.database = self.name

    def _known_slugs(self, tenants: Sequence[str] | None) -> list[str] | None:
        return None if tenants is None else [validate_slug(s) for s in tenants]

    async def rollback(
        self, target: Target, *, to: str | None = None, steps: int | None = None,
        max_failures: int | None = None, dry_run: bool = False,
    ) -> RolloutReport:
        """Revert applied migrations, newest first: `to=VERSION` (VERSION stays applied)
        or `steps=N`, in "public", every tenant ("tenants") or a list of slugs.

        Each step runs the migration's downgrade SQL and deletes its ledger row in
        one transaction, under the same lock and search_path isolation as upgrades.
        A schema where any migration to revert lacks downgrade SQL is failed
        before anything runs in it.
        """
        _check_max_failures(max_failures)
        if target == "all":
            raise ConfigurationError("rollback one scope at a time: 'public' or 'tenants'")
        include_public, slugs = _parse_target(target)
        kind = Scope.PUBLIC if include_public else Scope.TENANT
        problem = rollback_problem(self.migrations, kind, to=to, steps=steps)
        if problem:
            raise ConfigurationError(problem)
        label = f"rollback {target if isinstance(target, str) else ','.join(slugs or ())}"
        report = RolloutReport(target=label, dry_run=dry_run)
        started = time.perf_counter()

        def plan(state: SchemaState) -> SchemaPlan:
            return plan_rollback(self.migrations, state, to=to, steps=steps)

        conn = self.pool
        if include_public:
            public = await ledger.read_public_state(conn)
            ctx = await self._run_context(dry_run)
            await self._started(label, 1, dry_run)
            await self._run([plan(public)], report, max_failures, ctx, dry_run)
        else:
            states = await self._tenant_states(conn, slugs, required=True)
            ctx = await self._run_context(dry_run)
            await self._started(label, len(states), dry_run)
            async with self._tenant_plans(conn, states, plan, ctx) as plans:
                await self._run(plans, report, max_failures, ctx, dry_run)
        return await self._finished(report, started)

    # -- tenants -----------------------------------------------------------------

    async def create_tenant(
        self, slug: str, name: str | None = None, *, admin_email: str | None = None,
        migrate: bool = True,
    ) -> ledger.Tenant:
        """Create tenant `slug` whole, or not at all: schema, ledger, every tenant
        migration, the seed_admin hook and its public.tenants row, in one transaction.

        With migrate=False only the schema, an empty ledger and the registry row
        are created (to register a tenant whose migrations a rollout will apply).
        """
        if migrate:
            self._refuse_unfinished(Scope.TENANT)
        async with self.pool.acquire() as conn:
            tenant = await create_tenant(
                conn, self.migrations, self.pm, slug, name, admin_email=admin_email,
                migrate=migrate, options=self.options,
            )
        await call_hook_quietly(self.pm, "archify_tenant_created", tenant=tenant,
                                admin_email=admin_email)
        return tenant

    async def drop_tenant(self, slug: str) -> ledger.Tenant:
        """Drop tenant `slug`: its schema with all its data, and its registry row."""
        async with self.pool.acquire() as conn:
            tenant = await drop_tenant(conn, slug, options=self.options)
        await call_hook_quietly(self.pm, "archify_tenant_dropped", tenant=tenant)
        return tenant

    async def validate(self) -> list[str]:
        """Unfinished migration files, drift between the files and every schema's ledger,
        and ledger digests that disagree with their ledger, one line per problem (the
        files themselves were validated when the engine opened)."""
        status = await self.status()
        problems = [f"{m.path.name} is unfinished: {m.unfinished}"
                    for m in self.migrations.unfinished()]
        for schema in [status.public, *status.tenants]:
            drift = schema.drift
            problems += [f"{schema.schema}: {v} was edited after it was applied (checksum differs)"
                         for v in drift.edited]
            problems += [f"{schema.schema}: {v} is applied but no migration file has it"
                         for v in drift.missing_files]
            problems += [f"{schema.schema}: {v} is pending but older than applied migrations"
                         for v in drift.out_of_order]
            if schema.problem and not drift.out_of_order:
                problems.append(f"{schema.schema}: {schema.problem}")
        async with self.pool.acquire() as conn:
            problems += [
                f"{schema}: its ledger digest disagrees with its ledger (rows written with "
                "triggers skipped?), and status or rollouts may trust it: run DROP TRIGGER "
                f"{digest.ROW_TRIGGER} ON {quote_ident(schema)}.{LEDGER_TABLE} so that the "
                "ledger is read, and tracked again by its next migration"
                for schema in await digest.stale(conn)
            ]
        return problems

class _LazyWarnings:
    """PendingWarnings, made (and pglast imported) the first time something is pending."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._warnings: PendingWarnings | None = None

    async def warn(self, pending: Sequence[Any]) -> None:
        if self._warnings is None:
            from .lint.fleet import PendingWarnings

            engine = self.engine
            self._warnings = PendingWarnings(engine.migrations, engine.pm, engine._emit,
                                             engine.pool, engine.lint_config)
        await self._warnings.warn(pending)

    async def watching(self, plans: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for plan in plans:
            if plan.has_work:
                await self.warn(plan.pending)
            yield plan


def _check_max_failures(max_failures: int | None) -> None:
    if max_failures is not None and max_failures < 1:
        raise ConfigurationError(f"max_failures must be at least 1, not {max_failures}")


def _parse_target(target: Target) -> tuple[bool, list[str] | None]:
    """(include public?, tenant slugs or None for every tenant or none)."""
    if isinstance(target, str):
        if target == "public":
            return True, None
        if target == "tenants":
            return False, None
        if target == "all":
            return True, None
        raise ConfigurationError(
            f"unknown target {target!r}: use 'public', 'tenants', 'all' or a list of slugs"
        )
    slugs = [validate_slug(s) for s in target]
    if not slugs:
        raise ConfigurationError("an empty list of tenants was given")
    return False, list(dict.fromkeys(slugs))


async def _aiter(plans: Any) -> AsyncIterator[SchemaPlan]:
    if hasattr(plans, "__aiter__"):
        async for plan in plans:
            yield plan
    else:
        for plan in plans:
            yield plan

