"""Running a command's work: find the database, open an Engine, await, map errors.

Every error a user can meet ends here as one line on stderr and an exit code
(2: bad input, configuration, or a database that refused or went away); no
traceback reaches the terminal (ARCHIFY_DEBUG=1 shows it for an unexpected one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import output
from .options import Settings

if TYPE_CHECKING:
    from ..fleet import Fleet
    from ..fleet_config import Database
    from .progress import RolloutOutput

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    output.error(message)
    output.exit_with(code)
    raise AssertionError("unreachable")  # (sys.exit raised)


def guarded(make: Callable[[], T]) -> T:
    """Run pure code that may refuse bad input (a slug, a file) with an Archify error:
    exit 2, before anything connects."""
    from ..errors import ArchifyError

    try:
        return make()
    except ArchifyError as exc:
        fail(str(exc))


def run(settings: Settings, work: Callable[[Any], Awaitable[T]],
        progress: RolloutOutput | None = None, *, one_database: str | None = None) -> T:
    """Resolve the database (starting the embedded one if none is given), open an Engine
    on it, or a Fleet over the fleet file's databases, and run `work` on it; map every
    error to a message and an exit code. `work` calls the methods Engine and Fleet share
    (a fleet's take `databases=`: see `chosen`). A command that works on one database
    only names itself in `one_database`: over a fleet it then needs one --database."""
    from ..dsn import dsn_from_env, redact
    from ..errors import ArchifyError, TenantCreationError, sole_error
    from ..event_loop import run_async
    from ..fleet_config import choose

    output.route_logging()
    dsn = settings.dsn
    try:
        with ExitStack() as stack:
            if dsn is not None and not dsn.strip():
                # `--dsn "$PROD_DSN"` with the variable unset must not migrate another database
                fail("--dsn is empty; give a DSN, or leave the option out to use "
                     "ARCHIFY_DSN, DATABASE_URL or the embedded server")
            settings.migration_set()  # bad files are named before anything starts
            databases = settings.fleet_databases()
            if databases is not None and one_database:
                picked = choose(databases, settings.databases)
                if len(picked) != 1:
                    fail(f"{one_database} works on one database of the fleet: name it with "
                         f"--database ({', '.join(d.name for d in databases)})")
                dsn = picked[0].dsn
            elif databases is not None:
                return run_async(_on_fleet, settings, databases, work, progress)
            dsn = dsn or dsn_from_env() or _embedded(stack)

            async def main() -> T:
                async with settings.engine(dsn, progress) as engine:
                    if progress is None:
                        return await work(engine)
                    async with progress.ticking():
                        return await work(engine)

            return run_async(main)
    except Exception as exc:
        inner = sole_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(inner, TenantCreationError):
            fail(str(inner), EXIT_FAILED)
        if isinstance(inner, ArchifyError):
            fail(str(inner))
        fail(_database_error(exc, redact(dsn) if dsn else "the database"))


async def _on_fleet(settings: Settings, databases: list[Database],
                    work: Callable[[Fleet], Awaitable[T]], progress: RolloutOutput | None) -> T:
    async with settings.make_fleet(databases, progress) as fleet:
        if progress is None:
            return await work(fleet)
        async with progress.ticking():
            return await work(fleet)


def chosen(settings: Settings, target: object) -> dict[str, Any]:
    """The keyword a fleet's method takes for --database (nothing for one Engine)."""
    from ..fleet import Fleet

    return {"databases": settings.databases or None} if isinstance(target, Fleet) else {}


def _database_error(exc: Exception, where: str) -> str:
    """One line for what stopped the work: the server refused, went away, or a bug."""
    import asyncpg

    from ..errors import sole_error
    from ..server_watch import is_connection_error, loss_reason

    if isinstance(exc, BaseExceptionGroup):
        inner = sole_error(exc)
        if isinstance(inner, Exception) and not isinstance(inner, BaseExceptionGroup):
            return _database_error(inner, where)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):  # e.g. may not read the registry
        return (f"the database refused: {exc} (SQLSTATE {exc.sqlstate}); check the role's "
                "privileges (docs/security.md)")
    if isinstance(exc, asyncpg.PostgresError) and not is_connection_error(exc):
        return f"the database refused: {exc} (SQLSTATE {exc.sqlstate})"
    if is_connection_error(exc):
        return (f"lost the server at {where}: {loss_reason(exc)}; what finished before is "
                "kept, and a re-run does the rest")
    if os.environ.get("ARCHIFY_DEBUG"):
        raise exc
    return (f"unexpected {type(exc).__name__}: {exc} (this is a bug in archify; run again "
            "with ARCHIFY_DEBUG=1 for the traceback, and report it)")


def _embedded(stack: ExitStack) -> str:
    from ..embedded import DATABASE, data_dir, embedded_server, with_database
    from ..event_loop import run_async

    base = stack.enter_context(embedded_server(data_dir()))
    run_async(_ensure_database, base, DATABASE)
    return with_database(base, DATABASE)


async def _ensure_database(base_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def exit_for(ok: bool) -> NoReturn:
    output.exit_with(EXIT_OK if ok else EXIT_FAILED)
    sys.exit(1)  # (unreachable: exit_with exits)
