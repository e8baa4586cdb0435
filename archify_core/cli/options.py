"""The global options, given before the command or after it, and the Settings they make.

`archify --dsn X status` and `archify status --dsn X` mean the same, as with git and
kubectl: every command also takes the global options (listed under "Global options"
in its --help), and a value given after the command wins over one given before it.
Nothing heavy is imported here: `archify --help` must stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from ..engine import Engine
    from ..events import Event
    from ..fleet import Fleet
    from ..fleet_config import Database
    from ..migration import MigrationSet
    from ..steps import ExecutionOptions

# The engine's defaults, repeated here so that --help needs no engine import; a test
# keeps them equal (tests/test_cli_habits.py).
AUTO_CONCURRENCY = 16
DEFAULT_BATCH_SIZE = 8
DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_SERVER_WAIT = 60.0
SCOPES = ("public", "tenant", "both")  # migration.Scope's values


@dataclass
class Settings:
    """The global options, as the Engine's keyword arguments."""

    dsn: str | None = None
    migrations: Path = Path("migrations")
    concurrency: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float | None = None
    retries: int = DEFAULT_RETRIES
    server_wait: float = DEFAULT_SERVER_WAIT
    plugins: tuple[str, ...] = ()
    blocked_plugins: tuple[str, ...] = ()
    allow_out_of_order: bool = False
    fleet: Path | None = None
    databases: tuple[str, ...] = ()
    _loaded: MigrationSet | None = field(default=None, repr=False)

    def migration_set(self) -> MigrationSet:
        """The migration files, loaded (and their code run) once per command."""
        if self._loaded is None:
            from ..loader import load_migrations

            self._loaded = load_migrations(self.migrations)
        return self._loaded

    @property
    def options(self) -> ExecutionOptions:
        from ..steps import ExecutionOptions

        # digest: the dry runs show the usual case, a database whose digest table exists
        return ExecutionOptions(lock_timeout=self.lock_timeout,
                                statement_timeout=self.statement_timeout, retries=self.retries,
                                server_wait=self.server_wait, digest=True)

    def fleet_databases(self) -> list[Database] | None:
        """The fleet's databases (--fleet, $ARCHIFY_FLEET or ./archify.toml), or None for
        one database. --dsn means one database: an archify.toml in the folder is then
        left alone, and --fleet with it is a mistake."""
        from ..errors import ConfigurationError
        from ..fleet_config import choose, find_fleet_file, load_fleet_file

        if self.dsn is not None:
            if self.fleet is not None:
                raise ConfigurationError("--dsn names one database and --fleet a fleet: "
                                         "give one of them")
            if self.databases:
                raise ConfigurationError("--database picks databases of a fleet file; with "
                                         "--dsn there is only that one")
            return None
        path = find_fleet_file(self.fleet)
        if path is None:
            if self.databases:
                raise ConfigurationError("--database needs a fleet file (archify.toml here, "
                                         "--fleet PATH or ARCHIFY_FLEET)")
            return None
        databases = load_fleet_file(path)
        choose(databases, self.databases)  # an unknown name is refused before anything
        return databases

    def make_fleet(self, databases: list[Database],
                   on_event: Callable[[Event], None] | None = None) -> Fleet:
        from ..fleet import Fleet

        return Fleet(databases, self.migration_set(), on_event=on_event,
                     **self._engine_options())

    def _engine_options(self) -> dict[str, Any]:
        from ..plugins import load_plugin_reference

        return dict(
            concurrency=self.concurrency, batch_size=self.batch_size,
            lock_timeout=self.lock_timeout, statement_timeout=self.statement_timeout,
            retries=self.retries, server_wait=self.server_wait,
            allow_out_of_order=self.allow_out_of_order,
            plugins=[load_plugin_reference(p) for p in self.plugins],
            blocked_plugins=self.blocked_plugins,
        )

    def engine(self, dsn: str, on_event: Callable[[Event], None] | None = None) -> Engine:
        from ..engine import Engine

        return Engine(dsn, self.migration_set(), on_event=on_event, **self._engine_options())


def _global_options() -> list[click.Option]:
    """The global options, made afresh for each command that takes them."""
    return [
        click.Option(["--dsn"], help="PostgreSQL DSN [env ARCHIFY_DSN or DATABASE_URL; "
                     "default: an embedded server under .archify/]"),
        click.Option(["--fleet"], type=click.Path(path_type=Path),
                     help="Fleet file naming several databases [env ARCHIFY_FLEET; "
                          "default: ./archify.toml if it exists]"),
        click.Option(["--database", "databases"], multiple=True, metavar="NAME",
                     help="Only this database of the fleet (repeatable)."),
        click.Option(["--migrations"], type=click.Path(path_type=Path),
                     help="Folder of migration files. [default: migrations]"),
        click.Option(["--concurrency"], type=click.IntRange(min=1),
                     help=f"Schemas migrated at once. Default: up to {AUTO_CONCURRENCY}, and "
                          "at most half of the server's free connection slots."),
        click.Option(["--batch-size"], type=click.IntRange(min=1),
                     help="Schemas a worker sends in one round trip, each in its own "
                          f"transaction (1: one at a time). [default: {DEFAULT_BATCH_SIZE}]"),
        click.Option(["--lock-timeout"], type=click.FloatRange(min=0),
                     help="Seconds a migration waits for a table lock before it gives up "
                          f"(and retries). [default: {DEFAULT_LOCK_TIMEOUT:g}]"),
        click.Option(["--statement-timeout"], type=click.FloatRange(min=0),
                     help="Seconds one migration may run. Default: no limit."),
        click.Option(["--retries"], type=click.IntRange(min=0),
                     help="Extra attempts after a lock timeout or a lost connection. "
                          f"[default: {DEFAULT_RETRIES}]"),
        click.Option(["--server-wait"], type=click.FloatRange(min=0),
                     help="Seconds to wait for a server that went away mid-run before giving "
                          f"up on it. [default: {DEFAULT_SERVER_WAIT:g}]"),
        click.Option(["--plugin", "plugins"], multiple=True, metavar="MODULE[:OBJECT]",
                     help="Register a pluggy plugin (repeatable)."),
        click.Option(["--block-plugin", "blocked_plugins"], multiple=True, metavar="NAME",
                     help="Do not load this plugin, e.g. archify.defaults or an entry "
                          "point's name (repeatable)."),
        click.Option(["--allow-out-of-order"], is_flag=True, default=None,
                     help="Apply a migration older than one already applied."),
    ]


GLOBAL_NAMES = frozenset(o.name for o in _global_options() if o.name)
_SETTINGS_FIELDS = {f.name for f in fields(Settings)}
assert GLOBAL_NAMES <= _SETTINGS_FIELDS


def apply_given(settings: Settings, ctx: click.Context, values: dict[str, Any]) -> None:
    """Set on `settings` the global options given in `ctx` (the command line or their
    environment): a repeatable option adds to what came before, the others replace it."""
    for name in GLOBAL_NAMES:
        value = values.pop(name, None)
        if ctx.get_parameter_source(name) not in (ParameterSource.COMMANDLINE,
                                                  ParameterSource.ENVIRONMENT):
            continue
        if isinstance(value, tuple):
            value = getattr(settings, name) + value
        setattr(settings, name, value)


def _closest(error: click.NoSuchOption, ctx: click.Context) -> click.NoSuchOption:
    """The unknown option with the one real option closest to it, if any is close."""
    from difflib import get_close_matches

    known = [name for param in ctx.command.get_params(ctx)
             for name in (*param.opts, *param.secondary_opts) if name.startswith("--")]
    best = get_close_matches(error.option_name, known, n=1, cutoff=0.6)
    better = click.NoSuchOption(error.option_name, ctx=ctx)
    better.possibilities = best or None
    return better


class _SuggestsOne:
    """Click lists up to three close option names (`--dsnn`: "--dsn, --json"); name one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except click.NoSuchOption as error:
            raise _closest(error, ctx) from None


class _TakesGlobalOptions(_SuggestsOne):
    """Adds the global options to a click command or group, and hands those given to it
    to the command's Settings (the group's before the command's: the later wins)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options())  # type: ignore[attr-defined]

    def invoke(self, ctx: click.Context) -> Any:
        apply_given(ctx.ensure_object(Settings), ctx, ctx.params)
        return super().invoke(ctx)  # type: ignore[misc]


class GlobalOptionsCommand(_TakesGlobalOptions, click.Command):
    """A command that also takes the global options, after its name."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own = [p.get_help_record(ctx) for p in self.get_params(ctx)
               if p.name not in GLOBAL_NAMES]
        shared = [p.get_help_record(ctx) for p in self.get_params(ctx)
                  if p.name in GLOBAL_NAMES]
        for title, records in (("Options", own), ("Global options (before or after the "
                                                  "command)", shared)):
            rows = [r for r in records if r is not None]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class GlobalOptionsGroup(_TakesGlobalOptions, click.Group):
    """The `archify` group: takes the global options itself, and gives them to every
    command it has (GlobalOptionsCommand)."""

    command_class = GlobalOptionsCommand
