"""The `archify` command line: a thin front end over Engine.

Each command builds the same Engine a library user builds and awaits one of
its methods; output and exit codes are the only things decided here.
Exit codes: 0 all good, 1 some schema failed, 2 bad input or configuration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import click
from rich.console import Console

from ..dsn import dsn_from_env
from ..engine import AUTO_CONCURRENCY, DEFAULT_BATCH_SIZE, Engine
from ..errors import ArchifyError, ConfigurationError, TenantCreationError, TenantExistsError
from ..event_loop import run_async
from ..loader import load_migrations
from ..migration import MigrationSet, Scope
from ..planning import rollback_problem
from ..plugins import load_plugin_reference
from ..report import RolloutReport
from ..scaffold import new_migration
from ..steps import ExecutionOptions
from ..tenant_lifecycle import creation_dry_run, drop_sql
from ..tenants import schema_for, validate_slug
from .progress import RolloutOutput
from .render import closing_lines, rollout_title, status_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


@dataclass
class Settings:
    """The global options, as the Engine's keyword arguments."""

    dsn: str | None
    migrations: Path
    concurrency: int | None
    lock_timeout: float
    statement_timeout: float | None
    retries: int
    plugins: tuple[str, ...]
    allow_out_of_order: bool
    blocked_plugins: tuple[str, ...] = ()
    batch_size: int = DEFAULT_BATCH_SIZE
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    _loaded: MigrationSet | None = field(default=None, repr=False)

    def migration_set(self) -> MigrationSet:
        """The migration files, loaded (and their code run) once per command."""
        if self._loaded is None:
            self._loaded = load_migrations(self.migrations)
        return self._loaded

    @property
    def options(self) -> ExecutionOptions:
        # digest: the dry runs show the usual case, a database whose digest table exists
        return ExecutionOptions(lock_timeout=self.lock_timeout,
                                statement_timeout=self.statement_timeout, retries=self.retries,
                                digest=True)

    def engine(self, dsn: str, output: RolloutOutput | None = None) -> Engine:
        return Engine(
            dsn, self.migration_set(), concurrency=self.concurrency,
            batch_size=self.batch_size, lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout, retries=self.retries,
            allow_out_of_order=self.allow_out_of_order,
            plugins=[load_plugin_reference(p) for p in self.plugins],
            blocked_plugins=self.blocked_plugins, on_event=output,
        )

    def print(self, *lines: str) -> None:
        for line in lines:
            self.out.print(line, markup=False)


def run(settings: Settings, work: Callable[[Engine], Awaitable[T]],
        output: RolloutOutput | None = None) -> T:
    """Resolve the database (starting the embedded one if none is given), open an
    Engine on it and run `work`; map Archify's errors to a message and exit code 2."""
    try:
        with ExitStack() as stack:
            if settings.dsn is not None and not settings.dsn.strip():
                # `--dsn "$PROD_DSN"` with the variable unset must not migrate another database
                raise ConfigurationError("--dsn is empty; give a DSN, or leave the option out "
                                         "to use ARCHIFY_DSN, DATABASE_URL or the embedded server")
            dsn = settings.dsn or dsn_from_env() or _embedded(stack)

            async def main() -> T:
                async with settings.engine(dsn, output) as engine:
                    return await work(engine)

            return run_async(main)
    except TenantCreationError as exc:
        fail(str(exc), EXIT_FAILED)
    except ArchifyError as exc:
        fail(str(exc), EXIT_USAGE)
    except asyncpg.InsufficientPrivilegeError as exc:  # e.g. the role may not read the registry
        fail(f"the database refused: {exc} (SQLSTATE {exc.sqlstate}); check the role's "
             "privileges (docs/security.md)", EXIT_USAGE)
    except asyncpg.PostgresError as exc:  # e.g. a lock timeout while dropping a tenant
        fail(f"the database refused: {exc} (SQLSTATE {exc.sqlstate})", EXIT_USAGE)


def _embedded(stack: ExitStack) -> str:
    from ..embedded import DATABASE, data_dir, embedded_server, with_database

    base = stack.enter_context(embedded_server(data_dir()))
    run_async(_ensure_database, base, DATABASE)
    return with_database(base, DATABASE)


async def _ensure_database(base_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(base_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"archify: error: {message}", err=True)
    sys.exit(code)


# -- the command group -----------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", help="PostgreSQL DSN [env ARCHIFY_DSN or DATABASE_URL; "
              "default: an embedded server under .archify/]")
@click.option("--migrations", "migrations", default="migrations", show_default=True,
              type=click.Path(path_type=Path), help="Folder of migration files.")
@click.option("--concurrency", default=None, type=click.IntRange(min=1),
              help=f"Schemas migrated at once. Default: up to {AUTO_CONCURRENCY}, and at most "
                   "half of the server's free connection slots.")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(min=1),
              help="Schemas a worker sends in one round trip, each in its own transaction "
                   "(1: one at a time).")
@click.option("--lock-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a migration waits for a table lock before it gives up (and retries).")
@click.option("--statement-timeout", default=None, type=click.FloatRange(min=0),
              help="Seconds one migration may run. Default: no limit.")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(min=0),
              help="Extra attempts after a lock timeout or a lost connection.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE[:OBJECT]",
              help="Register a pluggy plugin (repeatable).")
@click.option("--block-plugin", "blocked_plugins", multiple=True, metavar="NAME",
              help="Do not load this plugin, e.g. archify.defaults or an entry point's name "
                   "(repeatable).")
@click.option("--allow-out-of-order", is_flag=True,
              help="Apply a migration older than one already applied.")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, migrations: Path, concurrency: int | None,
        batch_size: int, lock_timeout: float, statement_timeout: float | None, retries: int,
        plugins: tuple[str, ...], blocked_plugins: tuple[str, ...],
        allow_out_of_order: bool) -> None:
    """Apply versioned SQL migrations to public and every tenant schema."""
    ctx.obj = Settings(dsn, migrations, concurrency, lock_timeout, statement_timeout, retries,
                       plugins, allow_out_of_order, blocked_plugins, batch_size)


pass_settings = click.make_pass_decorator(Settings)


def main(args: list[str] | None = None, prog_name: str | None = None) -> Any:
    return cli.main(args=args, prog_name=prog_name or "archify")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@pass_settings
def status(settings: Settings, as_json: bool) -> None:
    """Show applied and pending migrations of public and every tenant."""
    fleet = run(settings, lambda engine: engine.status())
    if as_json:
        click.echo(json.dumps(fleet.to_dict()))
    else:
        settings.print(*status_lines(fleet))


def rollout_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every command that runs a rollout (or a rollback) takes."""
    for option in reversed([
        click.option("--max-failures", type=click.IntRange(min=1), default=None,
                     help="Stop starting new schemas after N failures (in-flight ones finish)."),
        click.option("--dry-run", is_flag=True, help="Show what would run, with its SQL; "
                     "change nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("--quiet", "-q", is_flag=True, help="Only the summary line."),
    ]):
        command = option(command)
    return command


def _migrate_command(name: str, help_text: str, target: str | None) -> None:
    @rollout_options
    @pass_settings
    def command(settings: Settings, max_failures: int | None, dry_run: bool, as_json: bool,
                quiet: bool, slug: str | None = None) -> None:
        if slug is not None:
            _guarded(lambda: validate_slug(slug))  # before connecting: bad input is exit 2
        migrate_target: str | list[str] = target or [slug or ""]
        label = target or slug or ""
        _rollout(settings, rollout_title(label, dry_run),
                 lambda e: e.migrate(migrate_target, max_failures=max_failures, dry_run=dry_run),
                 dry_run=dry_run, as_json=as_json, quiet=quiet)

    command.__doc__ = help_text
    if target is None:
        command = click.argument("slug")(command)
    cli.command(name)(command)


def _rollout(settings: Settings, title: str, work: Callable[[Engine], Awaitable[RolloutReport]],
             *, dry_run: bool, as_json: bool, quiet: bool, reverting: bool = False) -> NoReturn:
    """Print the title, run the rollout with live output, print the report; exit 0 or 1."""
    if not as_json:
        settings.print(title)
    report = _drive(settings, work, dry_run=dry_run, quiet=quiet or as_json, reverting=reverting)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        settings.print(*closing_lines(report))
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


def _drive(settings: Settings, work: Callable[[Engine], Awaitable[RolloutReport]], *,
           dry_run: bool, quiet: bool, reverting: bool = False) -> RolloutReport:
    """Run a rollout with its live output; a dry run also prints the SQL it would run."""
    sql = None
    if dry_run and not quiet:
        migrations = _load(settings)
        pick = (lambda m: m.downgrade_sql) if reverting else (lambda m: m.upgrade_sql)
        sql = {m.version: pick(m) or "" for m in migrations}
    output = RolloutOutput(settings.out, quiet=quiet, sql=sql)
    with output:
        return run(settings, work, output)


def _load(settings: Settings) -> MigrationSet:
    try:
        return settings.migration_set()
    except ArchifyError as exc:
        fail(str(exc), EXIT_USAGE)


_migrate_command("public", "Migrate the public schema only.", "public")
_migrate_command("tenants", "Migrate every tenant schema.", "tenants")
_migrate_command("tenant", "Migrate one tenant: archify tenant SLUG.", None)
_migrate_command("all", "Migrate public, then every tenant schema.", "all")


@cli.command("create-tenant")
@click.argument("slug")
@click.option("--name", help="Display name (default: the slug).")
@click.option("--admin-email",
              help="Passed to the seed_admin hook (the default one adds an admin user).")
@click.option("--no-migrate", is_flag=True,
              help="Only register the tenant (schema, empty ledger, registry row); "
                   "a later rollout applies its migrations.")
@click.option("--if-not-exists", is_flag=True, help="Succeed quietly if the tenant exists.")
@click.option("--dry-run", is_flag=True, help="Print the SQL it would run; change nothing.")
@pass_settings
def create_tenant(settings: Settings, slug: str, name: str | None, admin_email: str | None,
                  no_migrate: bool, if_not_exists: bool, dry_run: bool) -> None:
    """Create a tenant: schema, every tenant migration, seed, registry row — all or nothing."""
    _guarded(lambda: validate_slug(slug))  # before connecting: bad input is exit 2
    if dry_run:
        migrations = _load(settings)
        lines = _guarded(lambda: creation_dry_run(migrations, slug, name, migrate=not no_migrate,
                                                  options=settings.options))
        settings.print(f"-- dry run: create tenant {slug} (one transaction)", *lines)
        return

    async def work(engine: Engine) -> str:
        try:
            tenant = await engine.create_tenant(slug, name, admin_email=admin_email,
                                                migrate=not no_migrate)
        except TenantExistsError as exc:
            if not if_not_exists:
                raise
            return f"= {exc}"
        return f"✅ created tenant {tenant.slug} (schema {tenant.schema})"

    settings.print(run(settings, work))


def _guarded(make: Callable[[], T]) -> T:
    """Run pure code that may refuse bad input (a slug) with an Archify error: exit 2."""
    try:
        return make()
    except ArchifyError as exc:
        fail(str(exc), EXIT_USAGE)


@cli.command("drop-tenant")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--dry-run", is_flag=True, help="Print the SQL it would run; change nothing.")
@pass_settings
def drop_tenant(settings: Settings, slug: str, yes: bool, dry_run: bool) -> None:
    """Drop a tenant: its schema with ALL its data, and its registry row."""
    schema = _guarded(lambda: schema_for(slug))
    if dry_run:
        settings.print(f"-- dry run: drop tenant {slug} (one transaction)",
                       "BEGIN;\n" + drop_sql(slug, options=settings.options) + "COMMIT;")
        return
    if not yes:
        if not sys.stdin.isatty():
            fail(f"dropping {schema} deletes all its data; pass --yes to confirm", EXIT_USAGE)
        click.confirm(f"Drop {schema} and all its data?", abort=True)
    tenant = run(settings, lambda engine: engine.drop_tenant(slug))
    settings.print(f"🗑  dropped tenant {tenant.slug} (schema {tenant.schema})")


@cli.command("tenants-list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@pass_settings
def tenants_list(settings: Settings, as_json: bool) -> None:
    """List every registered tenant."""
    tenants = run(settings, lambda engine: engine.list_tenants())
    if as_json:
        click.echo(json.dumps([{"slug": t.slug, "schema": t.schema, "name": t.name}
                               for t in tenants]))
        return
    settings.print(f"🏢 {len(tenants)} tenant(s)")
    settings.print(*(f"  {t.slug} ({t.schema}) {t.name or ''}".rstrip() for t in tenants))


@cli.command()
@click.option("--to", "to", metavar="VERSION", help="Revert everything applied after VERSION.")
@click.option("--steps", type=click.IntRange(min=1), help="Revert the newest N migrations.")
@click.option("--schema", type=click.Choice(["public"]), help="Roll back the public schema.")
@click.option("--tenant", "tenants", multiple=True, metavar="SLUG",
              help="Roll back this tenant (repeatable).")
@click.option("--all-tenants", is_flag=True, help="Roll back every tenant, concurrently.")
@rollout_options
@pass_settings
def rollback(settings: Settings, to: str | None, steps: int | None, schema: str | None,
             tenants: tuple[str, ...], all_tenants: bool, max_failures: int | None,
             dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Revert migrations (newest first) with their DOWNGRADE SQL: --to VERSION or --steps N,
    for --schema public, --tenant SLUG or --all-tenants."""
    chosen = [bool(schema), bool(tenants), all_tenants]
    if sum(chosen) != 1:
        fail("choose exactly one of --schema public, --tenant SLUG, --all-tenants", EXIT_USAGE)
    # before connecting: bad input is exit 2 whatever the DSN
    for slug in tenants:
        _guarded(lambda slug=slug: validate_slug(slug))
    problem = rollback_problem(_load(settings), Scope.PUBLIC if schema else Scope.TENANT,
                               to=to, steps=steps)
    if problem:
        fail(problem, EXIT_USAGE)
    target: str | list[str] = "public" if schema else list(tenants) or "tenants"
    label = target if isinstance(target, str) else ", ".join(target)
    _rollout(settings, f"⏪ Rolling back {label}{' (dry run)' if dry_run else ''}...",
             lambda e: e.rollback(target, to=to, steps=steps, max_failures=max_failures,
                                  dry_run=dry_run),
             dry_run=dry_run, as_json=as_json, quiet=quiet, reverting=True)


@cli.command()
@click.option("--offline", is_flag=True, help="Check the files only; do not connect.")
@pass_settings
def validate(settings: Settings, offline: bool) -> None:
    """Check the migration files, and (unless --offline) drift against every schema's ledger.
    Exits 2 on invalid files, 1 on drift."""
    migrations = _load(settings)
    settings.print(f"✓ {len(migrations)} migration files are valid")
    if offline:
        return
    problems = run(settings, lambda engine: engine.validate())
    if problems:
        settings.print(*(f"✗ {p}" for p in problems))
        sys.exit(EXIT_FAILED)
    settings.print("✓ no drift: every applied migration matches its file")


@cli.command()
@click.argument("name")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), required=True,
              help="Where it applies.")
@click.option("--description", help="MIGRATION_DESCRIPTION (default: from the name).")
@pass_settings
def new(settings: Settings, name: str, scope: str, description: str | None) -> None:
    """Write the next-numbered migration file from the guide's template."""
    path = _guarded(lambda: new_migration(settings.migrations, name, Scope(scope), description))
    settings.print(f"📝 created {path}; fill in UPGRADE_SQL and DOWNGRADE_SQL")
