"""A fleet over many databases: one Engine per database, driven at once.

    async with Fleet(databases, "migrations") as fleet:
        report = await fleet.migrate("all")       # every database's rollout, concurrently

Each database keeps its own pool, sized to its own server (the Engine's automatic
concurrency, or the database's own `concurrency`), so a slow or small server holds
back no other. The per-database work is the Engine's, unchanged: this module only
opens the engines, runs their calls side by side and gathers what they return. A
database that cannot be reached is reported once, by name, and the others go on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio

from .dsn import redact, scrub
from .engine import Engine, Target
from .errors import ArchifyError, ConfigurationError, TenantExistsError, TenantNotFoundError
from .events import Event, Notice
from .fleet_config import Database
from .ledger import Tenant
from .loader import load_migrations
from .migration import MigrationSet
from .report import RolloutReport
from .status import FleetStatus
from .structural_drift import StructuralDriftReport

T = TypeVar("T")


@dataclass(slots=True)
class FleetReport:
    """Every database's rollout report, and the databases that could not be reached."""

    target: str
    databases: dict[str, RolloutReport] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # name -> why (no password)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(r.ok for r in self.databases.values())

    def summary(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for report in self.databases.values():
            for key, value in report.summary().items():
                total[key] = total.get(key, 0) + value
        total["databases"] = len(self.databases) + len(self.unreachable)
        total["unreachable"] = len(self.unreachable)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "ok": self.ok, "dry_run": self.dry_run,
            "summary": self.summary(),
            "databases": {name: r.to_dict() for name, r in self.databases.items()},
            "unreachable": dict(self.unreachable),
        }


@dataclass(slots=True)
class FleetWideStatus:
    databases: dict[str, FleetStatus] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"databases": {name: s.to_dict() for name, s in self.databases.items()},
                "unreachable": dict(self.unreachable)}


def place(counts: Mapping[str, int], weights: Mapping[str, float]) -> str:
    """The database with the most room: the fewest tenants for its weight (the first
    named on a tie). Pure."""
    return min(counts, key=lambda name: counts[name] / weights[name])


class Fleet:
    """Engines over `databases`, opened together; every method runs on all of them (or
    those named) at once. Engine keyword arguments apply to every database; a
    database's own `concurrency` wins over the shared one."""

    def __init__(self, databases: Sequence[Database],
                 migrations: str | Path | MigrationSet = "migrations", *,
                 on_event: Callable[[Event], None] | None = None,
                 **engine_options: Any) -> None:
        if not databases:
            raise ConfigurationError("a fleet needs at least one database")
        names = [d.name for d in databases]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"a database name is used twice in the fleet: {names}")
        self.databases = list(databases)
        self._migrations = migrations
        self._on_event = on_event
        self._options = engine_options
        self.engines: dict[str, Engine] = {}
        self.unreachable: dict[str, str] = {}  # databases that could not be opened

    async def __aenter__(self) -> Self:
        source = self._migrations
        migrations = (source if isinstance(source, MigrationSet)
                      else await anyio.to_thread.run_sync(load_migrations, source))
        async with anyio.create_task_group() as tg:
            for database in self.databases:
                tg.start_soon(self._open, database, migrations)
        self._share_servers()
        return self

    def _share_servers(self) -> None:
        """Databases on one server share its free slots: each engine left to size itself
        took its share as if alone (they opened at once), so each gets 1/k of it."""
        on_server: dict[tuple[str, str], list[Engine]] = {}
        for database in self.databases:
            engine = self.engines.get(database.name)
            if engine is not None and database.concurrency is None:
                on_server.setdefault(server_of(database.dsn), []).append(engine)
        for engines in on_server.values():
            for engine in engines:
                if engine.sized_to_server:
                    engine.concurrency = max(1, engine.concurrency // len(engines))

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        async with anyio.create_task_group() as tg:
            for engine in self.engines.values():
                tg.start_soon(engine.__aexit__, None, None, None)

    async def _open(self, database: Database, migrations: MigrationSet) -> None:
        options = dict(self._options)
        if database.concurrency is not None:
            options["concurrency"] = database.concurrency
        engine = Engine(database.dsn, migrations, name=database.name,
                        on_event=self._tagged(database.name), **options)
        try:
            await engine.__aenter__()
        except Exception as exc:  # reported once, by name; the others go on
            self.unreachable[database.name] = _reason(exc, database)
            return
        self.engines[database.name] = engine

    def _tagged(self, name: str) -> Callable[[Event], None] | None:
        handler = self._on_event
        if handler is None:
            return None

        def tagged(event: Event) -> None:  # a notice says which database it is about
            handler(replace(event, message=f"{name}: {event.message}")
                    if isinstance(event, Notice) else event)
        return tagged

    def _chosen(self, names: Iterable[str] | None) -> dict[str, Engine]:
        names = list(names or ())
        unknown = [n for n in names if n not in {d.name for d in self.databases}]
        if unknown:
            raise ConfigurationError(f"no database {unknown[0]!r} in the fleet (it has: "
                                     f"{', '.join(d.name for d in self.databases)})")
        return {n: e for n, e in self.engines.items() if not names or n in names}

    async def _each(self, work: Callable[[Engine], Awaitable[T]],
                    names: Iterable[str] | None = None) -> tuple[dict[str, T], dict[str, str]]:
        """`work` on every chosen engine at once: results by name, and the databases that
        failed as a whole (lost for good, refused) with why; unreachable ones included."""
        engines = self._chosen(names)
        chosen = set(names or ()) or {d.name for d in self.databases}
        results: dict[str, T] = {}
        failed = {n: why for n, why in self.unreachable.items() if n in chosen}

        async def one(name: str, engine: Engine) -> None:
            try:
                results[name] = await work(engine)
            except ArchifyError as exc:
                if isinstance(exc, ConfigurationError) and not _is_database_error(exc):
                    raise  # the same for every database: the caller's mistake
                failed[name] = str(exc)
            except Exception as exc:
                failed[name] = _reason(exc, self._database(name))

        async with anyio.create_task_group() as tg:
            for name, engine in engines.items():
                tg.start_soon(one, name, engine)
        order = [d.name for d in self.databases]
        return ({n: results[n] for n in order if n in results},
                {n: failed[n] for n in order if n in failed})

    def _database(self, name: str) -> Database:
        return next(d for d in self.databases if d.name == name)

    # -- the Engine's methods, over the fleet ------------------------------------------

    async def migrate(self, target: Target = "all", *, databases: Iterable[str] | None = None,
                      max_failures: int | None = None, dry_run: bool = False) -> FleetReport:
        """Every chosen database's Engine.migrate(target) at once. A list of slugs
        migrates each tenant in the database that holds it."""
        if isinstance(target, str):
            reports, failed = await self._each(
                lambda e: e.migrate(target, max_failures=max_failures, dry_run=dry_run),
                databases)
        else:
            where = await self.find_tenants(target, databases)

            async def theirs(engine: Engine) -> RolloutReport:
                slugs = [s for s in target if where.get(s) == engine.name]
                return await engine.migrate(slugs, max_failures=max_failures, dry_run=dry_run)
            reports, failed = await self._each(theirs, set(where.values()))
        label = target if isinstance(target, str) else ",".join(target)
        return FleetReport(label, reports, failed, dry_run)

    async def status(self, databases: Iterable[str] | None = None, *,
                     tenants: Sequence[str] | None = None) -> FleetWideStatus:
        """Every chosen database's Engine.status(); with `tenants`, only those tenants,
        each asked of the database that holds it."""
        if tenants is None:
            found, failed = await self._each(lambda e: e.status(), databases)
        else:
            where = await self.find_tenants(tenants, databases)
            found, failed = await self._each(
                lambda e: e.status([s for s in tenants if where[s] == e.name]),
                set(where.values()) or databases)
        return FleetWideStatus(found, failed)

    async def structural_drift(self, against: str = "majority",
                               databases: Iterable[str] | None = None
                               ) -> tuple[dict[str, StructuralDriftReport], dict[str, str]]:
        """Engine.structural_drift() in every chosen database at once: each database's
        tenants are compared among themselves (reports by name, and the databases that
        could not be checked, with why)."""
        return await self._each(lambda e: e.structural_drift(against=against), databases)

    async def list_tenants(self, databases: Iterable[str] | None = None
                           ) -> tuple[dict[str, list[Tenant]], dict[str, str]]:
        return await self._each(lambda e: e.list_tenants(), databases)

    async def find_tenants(self, slugs: Iterable[str],
                           databases: Iterable[str] | None = None) -> dict[str, str]:
        """Which database holds each slug; an unknown slug is an UnknownTenantError, and a
        database that cannot be asked a ConfigurationError (the slug may be there)."""
        tenants, failed = await self.list_tenants(databases)
        if failed:
            name, why = next(iter(failed.items()))
            raise ConfigurationError(f"cannot look for tenants in database {name}: {why}")
        where = {t.slug: name for name, listed in tenants.items() for t in listed}
        missing = [slug for slug in slugs if slug not in where]
        if missing:
            raise TenantNotFoundError(f"tenant {missing[0]!r} is in no database of the fleet "
                                      f"({', '.join(d.name for d in self.databases)})")
        return {slug: where[slug] for slug in slugs}

    async def create_tenant(self, slug: str, name: str | None = None, *,
                            database: str | None = None, **options: Any) -> tuple[str, Tenant]:
        """Create `slug` on `database`, or on the one with the most room (weight and
        tenant count); refused when any database of the fleet already has the slug."""
        tenants, failed = await self.list_tenants()
        if failed:
            down, why = next(iter(failed.items()))
            raise ConfigurationError(f"cannot check that {slug!r} is new in database {down} "
                                     f"({why}); nothing was created")
        for holder, listed in tenants.items():
            if any(t.slug == slug for t in listed):
                raise TenantExistsError(f"tenant {slug!r} already exists, in database "
                                        f"{holder}; nothing was created")
        if database is None:
            weights = {d.name: d.weight for d in self.databases}
            database = place({n: len(t) for n, t in tenants.items()}, weights)
        engine = self._chosen([database])[database]
        return database, await engine.create_tenant(slug, name, **options)

    async def rollback(self, target: Target, *, databases: Iterable[str] | None = None,
                       **options: Any) -> FleetReport:
        """Engine.rollback(target, …) in every chosen database at once ("public",
        "tenants", or slugs: each in the database that holds it)."""
        if isinstance(target, str):
            reports, failed = await self._each(lambda e: e.rollback(target, **options),
                                               databases)
        else:
            where = await self.find_tenants(target, databases)

            async def theirs(engine: Engine) -> RolloutReport:
                slugs = [s for s in target if where.get(s) == engine.name]
                return await engine.rollback(slugs, **options)
            reports, failed = await self._each(theirs, set(where.values()))
        label = "rollback " + (target if isinstance(target, str) else ",".join(target))
        return FleetReport(label, reports, failed, bool(options.get("dry_run")))

    async def validate(self, databases: Iterable[str] | None = None) -> list[str]:
        """Engine.validate() of every database, each problem prefixed with its database;
        a database that cannot be reached is a problem too."""
        found, failed = await self._each(lambda e: e.validate(), databases)
        return ([f"{name}: {line}" for name, lines in found.items() for line in lines]
                + [f"{name}: cannot be checked: {why}" for name, why in failed.items()])

    async def drop_tenant(self, slug: str) -> tuple[str, Tenant]:
        [(_, database)] = (await self.find_tenants([slug])).items()
        return database, await self.engines[database].drop_tenant(slug)


def server_of(dsn: str) -> tuple[str, str]:
    """The server a DSN points at (host or socket folder, port), from the DSN alone."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    port = str(parts.port or (query.get("port") or ["5432"])[0])
    return host, port


def _is_database_error(exc: ArchifyError) -> bool:
    from .errors import DatabaseConnectionError, RegistryMissingError

    return isinstance(exc, DatabaseConnectionError | RegistryMissingError)


def _reason(exc: BaseException, database: Database) -> str:
    """Why a database is out, in one line, its DSN's password redacted."""
    from .server_watch import is_connection_error, loss_reason

    if isinstance(exc, ArchifyError):
        text = str(exc)
    elif is_connection_error(exc):
        text = f"cannot reach the server at {redact(database.dsn)}: {loss_reason(exc)}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return scrub(text, database.dsn)  # should a message quote the password
