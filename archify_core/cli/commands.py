"""The commands: each builds the same Engine a library user builds and awaits one of its
methods (running.run); output and exit codes are the only things decided here.

Only click and light modules are imported at the top: the engine, asyncpg and the
migration files load when a command runs, never for --help or --version.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .._version import __version__
from . import output
from .options import SCOPES, GlobalOptionsGroup, Settings
from .running import EXIT_FAILED, chosen, exit_for, fail, guarded, run

if TYPE_CHECKING:
    from ..engine import Engine
    from ..fleet import Fleet
    from ..lint import LintReport

pass_settings = click.make_pass_decorator(Settings, ensure=True)


@click.group(cls=GlobalOptionsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", message="archify %(version)s")
def cli() -> None:
    """Apply versioned SQL migrations to public and every tenant schema.

    Global options go before or after the command: `archify --dsn X status` and
    `archify status --dsn X` are the same.
    """


def _json(value: Any) -> None:
    output.stdout.write(json.dumps(value) + "\n")


# -- reading -----------------------------------------------------------------------

@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@pass_settings
def status(settings: Settings, as_json: bool) -> None:
    """Show applied and pending migrations of public and every tenant."""
    from ..fleet import FleetWideStatus
    from .render import fleet_status_lines, status_lines

    status = run(settings, lambda on: on.status(**chosen(settings, on)))
    if as_json:
        _json(status.to_dict())
    elif isinstance(status, FleetWideStatus):
        output.stdout.lines(fleet_status_lines(status))
    else:
        output.stdout.lines(status_lines(status))
    output.exit_with(EXIT_FAILED if getattr(status, "unreachable", None) else 0)


@cli.command("tenants-list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@pass_settings
def tenants_list(settings: Settings, as_json: bool) -> None:
    """List every registered tenant."""
    from .render import plural

    found = run(settings, lambda on: on.list_tenants(**chosen(settings, on)))
    by_database, unreachable = found if isinstance(found, tuple) else ({None: found}, {})
    rows = [{"slug": t.slug, "schema": t.schema, "name": t.name,
             **({"database": name} if name else {})}
            for name, tenants in by_database.items() for t in tenants]
    if as_json:
        _json(rows)
    else:
        output.stdout.lines([f"🏢 {plural(len(rows), 'tenant')}",
                             *(f"  {r['slug']} ({r['schema']}) {r['name'] or ''}".rstrip()
                               + (f" [{r['database']}]" if "database" in r else "")
                               for r in rows)])
    for name, why in unreachable.items():
        output.error(f"database {name} could not be read: {why}")
    output.exit_with(EXIT_FAILED if unreachable else 0)


# -- migrating -----------------------------------------------------------------------

def rollout_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every command that runs a rollout (or a rollback) takes."""
    for option in reversed([
        click.option("--max-failures", type=click.IntRange(min=1), default=None,
                     help="Stop starting new schemas after N failures (in-flight ones finish)."),
        click.option("--fail-fast", is_flag=True,
                     help="Stop starting new schemas at the first failure (--max-failures 1)."),
        click.option("--dry-run", is_flag=True, help="Show what would run, with its SQL; "
                     "change nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("--quiet", "-q", is_flag=True, help="Only the summary line."),
    ]):
        command = option(command)
    return command


def _max_failures(max_failures: int | None, fail_fast: bool) -> int | None:
    if fail_fast and max_failures not in (None, 1):
        fail(f"--fail-fast stops at the first failure; it cannot go with --max-failures "
             f"{max_failures}")
    return 1 if fail_fast else max_failures


def _migrate_command(name: str, help_text: str, target: str | None) -> None:
    @rollout_options
    @pass_settings
    def command(settings: Settings, max_failures: int | None, fail_fast: bool, dry_run: bool,
                as_json: bool, quiet: bool, slug: str | None = None) -> None:
        from ..tenants import validate_slug
        from .render import rollout_title

        if slug is not None:
            guarded(lambda: validate_slug(slug))  # before connecting: bad input is exit 2
        limit = _max_failures(max_failures, fail_fast)
        migrate_target: str | list[str] = target or [slug or ""]
        _rollout(settings, rollout_title(target or slug or "", dry_run),
                 lambda on: on.migrate(migrate_target, max_failures=limit, dry_run=dry_run,
                                       **chosen(settings, on)),
                 dry_run=dry_run, as_json=as_json, quiet=quiet)

    command.__doc__ = help_text
    if target is None:
        command = click.argument("slug")(command)
    cli.command(name)(command)


def _rollout(settings: Settings, title: str, work: Callable[[Any], Awaitable[Any]],
             *, dry_run: bool, as_json: bool, quiet: bool, reverting: bool = False) -> NoReturn:
    """Run the rollout with its live output, print the report; exit 0 or 1."""
    from ..fleet import FleetReport
    from .progress import RolloutOutput
    from .render import closing_lines, fleet_closing_lines

    sql = None
    if dry_run and not quiet and not as_json:
        migrations = guarded(settings.migration_set)
        sql = {m.version: (m.downgrade_sql if reverting else m.upgrade_sql) or ""
               for m in migrations}
    progress = RolloutOutput(quiet=quiet, log=not as_json, sql=sql, reverting=reverting)
    progress.title = title
    with progress:
        report = run(settings, work, progress)
    if as_json:
        _json(report.to_dict())
    else:
        lines = (fleet_closing_lines(report) if isinstance(report, FleetReport)
                 else closing_lines(report))
        output.stdout.lines(lines[-1:] if quiet and isinstance(report, FleetReport)
                            else lines[1:] if quiet else lines)
    exit_for(report.ok)


_migrate_command("public", "Migrate the public schema only.", "public")
_migrate_command("tenants", "Migrate every tenant schema.", "tenants")
_migrate_command("tenant", "Migrate one tenant: archify tenant SLUG.", None)
_migrate_command("all", "Migrate public, then every tenant schema.", "all")


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
             fail_fast: bool, dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Revert migrations (newest first) with their DOWNGRADE SQL: --to VERSION or --steps N,
    for --schema public, --tenant SLUG or --all-tenants."""
    from ..migration import Scope
    from ..planning import rollback_problem
    from ..tenants import validate_slug

    picked = [bool(schema), bool(tenants), all_tenants]
    if sum(picked) != 1:
        fail("choose exactly one of --schema public, --tenant SLUG, --all-tenants")
    # before connecting: bad input is exit 2 whatever the DSN
    for slug in tenants:
        guarded(lambda slug=slug: validate_slug(slug))
    limit = _max_failures(max_failures, fail_fast)
    problem = rollback_problem(guarded(settings.migration_set),
                               Scope.PUBLIC if schema else Scope.TENANT, to=to, steps=steps)
    if problem:
        fail(problem)
    target: str | list[str] = "public" if schema else list(tenants) or "tenants"
    label = target if isinstance(target, str) else ", ".join(target)
    title = f"⏪ Rolling back {label}{' (dry run)' if dry_run else ''}..."
    _rollout(settings, title,
             lambda on: on.rollback(target, to=to, steps=steps, max_failures=limit,
                                    dry_run=dry_run, **chosen(settings, on)),
             dry_run=dry_run, as_json=as_json, quiet=quiet, reverting=True)


# -- tenants -----------------------------------------------------------------------

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
    from ..errors import TenantExistsError
    from ..tenant_lifecycle import creation_dry_run
    from ..tenants import validate_slug

    guarded(lambda: validate_slug(slug))  # before connecting: bad input is exit 2
    if len(settings.databases) > 1:
        fail("create-tenant places a tenant in one database: give --database once, or "
             "leave it out to place it where there is most room")
    if dry_run:
        migrations = guarded(settings.migration_set)
        lines = guarded(lambda: creation_dry_run(migrations, slug, name, migrate=not no_migrate,
                                                 options=settings.options))
        output.stdout.lines([f"-- dry run: create tenant {slug} (one transaction)", *lines])
        output.exit_with(0)

    async def work(on: Engine | Fleet) -> str:
        from ..fleet import Fleet

        where = ""
        try:
            if isinstance(on, Fleet):  # placed by room, or on --database
                database, tenant = await on.create_tenant(
                    slug, name, database=settings.databases[0] if settings.databases else None,
                    admin_email=admin_email, migrate=not no_migrate)
                where = f" in database {database}"
            else:
                tenant = await on.create_tenant(slug, name, admin_email=admin_email,
                                                migrate=not no_migrate)
        except TenantExistsError as exc:
            if not if_not_exists:
                raise
            return f"= {exc}"
        return f"✅ created tenant {tenant.slug} (schema {tenant.schema}){where}"

    output.stdout.line(run(settings, work))
    output.exit_with(0)


@cli.command("drop-tenant")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--dry-run", is_flag=True, help="Print the SQL it would run; change nothing.")
@pass_settings
def drop_tenant(settings: Settings, slug: str, yes: bool, dry_run: bool) -> None:
    """Drop a tenant: its schema with ALL its data, and its registry row."""
    from ..tenant_lifecycle import drop_sql
    from ..tenants import schema_for

    schema = guarded(lambda: schema_for(slug))
    if dry_run:
        output.stdout.lines([f"-- dry run: drop tenant {slug} (one transaction)",
                             "BEGIN;\n" + drop_sql(slug, options=settings.options) + "COMMIT;"])
        output.exit_with(0)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"dropping {schema} deletes all its data; pass --yes to confirm")
        click.confirm(f"Drop {schema} and all its data?", abort=True)
    dropped = run(settings, lambda on: on.drop_tenant(slug))
    where, tenant = dropped if isinstance(dropped, tuple) else (None, dropped)
    output.stdout.line(f"🗑  dropped tenant {tenant.slug} (schema {tenant.schema})"
                       + (f" from database {where}" if where else ""))
    output.exit_with(0)


# -- checking and writing ---------------------------------------------------------------

@cli.command()
@click.option("--offline", is_flag=True, help="Check the files only; do not connect.")
@pass_settings
def validate(settings: Settings, offline: bool) -> None:
    """Check the migration files, and (unless --offline) drift against every schema's ledger.
    Lint findings are warnings (of the pending migrations; --offline: of every file).
    Exits 2 on invalid files, 1 on drift or unfinished files."""
    from .render import plural

    migrations = guarded(settings.migration_set)
    unfinished = migrations.unfinished()
    ready = len(migrations) - len(unfinished)
    output.stdout.line(f"✓ {plural(ready, 'migration file')} "
                       f"{'is' if ready == 1 else 'are'} valid")
    if offline:
        from .lint_command import offline_lint

        problems = [f"{m.path.name} is unfinished: {m.unfinished}" for m in unfinished]
        # nothing says what is pending without a database: every file's findings
        warnings = _lint_warnings(guarded(lambda: offline_lint(settings)))
    else:
        problems, warnings = run(settings, lambda on: _validate(settings, on))
    output.stderr.lines([f"  ℹ lint: {w}" for w in warnings])
    if problems:
        output.stdout.lines([f"✗ {p}" for p in problems])
        output.exit_with(EXIT_FAILED)
    if not offline:
        output.stdout.line("✓ no drift: every applied migration matches its file")
    output.exit_with(0)


async def _validate(settings: Settings, on: Engine | Fleet) -> tuple[list[str], list[str]]:
    """The problems, and the lint findings of the pending migrations (warnings: they do
    not fail validate; `archify lint` is the gate). Over a fleet: the problems only."""
    from ..fleet import Fleet

    problems = await on.validate(**chosen(settings, on))
    if isinstance(on, Fleet):
        return problems, []
    return problems, _lint_warnings(await on.pending_lint())


def _lint_warnings(report: LintReport) -> list[str]:
    return [f"{f.describe()}; safer: {f.safe}" for f in report.standing]


@cli.command()
@click.argument("name")
@click.option("--scope", type=click.Choice(SCOPES), required=True,
              help="Where it applies.")
@click.option("--description", help="MIGRATION_DESCRIPTION (default: from the name).")
@pass_settings
def new(settings: Settings, name: str, scope: str, description: str | None) -> None:
    """Write the next-numbered migration file from the guide's template."""
    from ..migration import Scope
    from ..scaffold import new_migration

    path = guarded(lambda: new_migration(settings.migrations, name, Scope(scope), description))
    output.stdout.line(f"📝 created {path}; fill in UPGRADE_SQL and DOWNGRADE_SQL")
    output.exit_with(0)
