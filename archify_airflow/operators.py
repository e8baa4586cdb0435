"""Airflow operators: thin callers of Archify's async Engine.

Each operator builds its hook and Engine inside `execute` (never at DAG parse
time), drives the async API with `run_async` (anyio, on uvloop when installed),
logs one line per schema and returns a small JSON-safe dict to XCom (see `archify_airflow.reports`).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import BaseOperator, Context, SkipMixin
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from archify_core import (
    ConfigurationError,
    DatabaseConnectionError,
    Engine,
    Event,
    InvalidSlugError,
    MigrationRetrying,
    MigrationSetError,
    Notice,
    Outcome,
    RolloutFinished,
    RolloutReport,
    SchemaFinished,
    SchemaResult,
    TenantExistsError,
    TenantNotFoundError,
)
from archify_core.event_loop import run_async
from archify_core.fleet import Fleet, FleetReport
from archify_core.fleet_config import Database

from .hooks import ArchifyHook
from .reports import (
    compact_fleet_report,
    compact_report,
    compact_status,
    compact_statuses,
    describe_failures,
)
from .sharding import choose_canaries, plan_shards, select_tenants, shard

T = TypeVar("T")
MIGRATIONS_ENV = "ARCHIFY_MIGRATIONS"
MAX_LOGGED_SCHEMAS = 200  # status lines per task log; the XCom has the counts
# Errors a retry cannot fix (a typo, a bad migration set): the task fails at once.
# An unreachable database (DatabaseConnectionError) stays retryable.
NOT_RETRYABLE = (ConfigurationError, TenantNotFoundError, MigrationSetError, InvalidSlugError)


def _given(value: object) -> str | None:
    """A templated parameter as given, or None when empty (a rendered None counts as
    empty: Jinja renders it as the string "None")."""
    text = "" if value is None else str(value).strip()
    return None if text in ("", "None") else text


def _whole_number(value: object, name: str) -> int | None:
    """A templated whole-number parameter, None when empty; other text fails the task
    without retries (no retry fixes a typo)."""
    given = _given(value)
    if given is None:
        return None
    try:
        return int(given)
    except ValueError:
        raise AirflowFailException(f"{name} must be a whole number, not {given!r}") from None


class ArchifyConnectionFailed(AirflowException):
    """The database of the task's connection could not be reached (retryable)."""


class ArchifyRolloutFailed(AirflowException):
    """Some schemas failed; the others were migrated. A retry redoes only what is pending."""


class ArchifyBaseOperator(BaseOperator):
    """Connection, migrations folder and Engine options shared by every Archify operator.

    :param archify_conn_id: Airflow connection to the database (templated).
    :param archify_conn_ids: several connections, one per database (templated; a list or
        "a,b"): the operators that take it (status, drift, migrate, shard_tenants) work on
        every database at once, each with its own pool (``archify_core.Fleet``); a
        database that cannot be reached fails the task naming its connection, after the
        others are done.
    :param migrations: folder of migration files (templated); when empty or None: the
        ``ARCHIFY_MIGRATIONS`` environment variable of the worker, else ``migrations``.
    :param concurrency: schemas migrated at once by this task (templated); by default the
        engine's: up to 16, and at most half of the server's free connection slots.
    :param engine_options: further ``Engine`` keyword arguments (``lock_timeout``,
        ``statement_timeout``, ``retries``, ``plugins``, ...).
    """

    template_fields: Sequence[str] = ("archify_conn_id", "archify_conn_ids", "migrations",
                                      "concurrency")
    ui_color = "#e8f1fb"

    def __init__(
        self, *, archify_conn_id: str = ArchifyHook.default_conn_name,
        archify_conn_ids: Sequence[str] | str | None = None,
        migrations: str | Path | None = None, concurrency: int | str | None = None,
        engine_options: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.archify_conn_id = archify_conn_id
        self.archify_conn_ids = archify_conn_ids
        self.migrations = migrations
        self.concurrency = concurrency
        self.engine_options = dict(engine_options or {})

    @cached_property
    def hook(self) -> ArchifyHook:
        return ArchifyHook(archify_conn_id=self.archify_conn_id)

    def migrations_path(self) -> str:
        """Resolved on the worker, where the files must be."""
        return _given(self.migrations) or os.environ.get(MIGRATIONS_ENV) or "migrations"

    def concurrency_setting(self) -> int | None:
        """The rendered concurrency; None (the engine sizes it) when empty."""
        return _whole_number(self.concurrency, "concurrency")

    def engine(self) -> Engine:
        return self.hook.get_engine(
            self.migrations_path(), concurrency=self.concurrency_setting(),
            on_event=self.log_event, **self.engine_options,
        )

    def run_engine(self, work: Callable[[Engine], Awaitable[T]]) -> T:
        """Open an Engine, await `work(engine)`, close it; all in one event loop.

        Configuration errors (a typo in a slug or an option, bad migration files, a
        connection id that is not defined) raise AirflowFailException, so Airflow does not
        retry them. Connection problems are one log line naming the connection, and an
        exception without the driver's chain behind it.
        """

        async def main() -> T:
            async with self.engine() as engine:
                return await work(engine)

        return self._guarded(lambda: run_async(main), self.archify_conn_id)

    def connection_ids(self) -> list[str] | None:
        """The rendered ``archify_conn_ids`` (None: not given, one database)."""
        given = [c.strip() for c in as_slugs(self.archify_conn_ids) or () if c.strip()]
        return list(dict.fromkeys(given)) or None

    def run_fleet(self, work: Callable[[Fleet], Awaitable[T]]) -> T:
        """Open a Fleet over ``archify_conn_ids`` (each database named by its connection
        id), await `work(fleet)`, close it; the errors as in `run_engine`."""
        conn_ids = self.connection_ids() or [self.archify_conn_id]
        databases = [Database(conn_id, self._guarded(ArchifyHook(conn_id).get_dsn, conn_id))
                     for conn_id in conn_ids]

        async def main() -> T:
            async with Fleet(databases, self.migrations_path(), on_event=self.log_event,
                             concurrency=self.concurrency_setting(),
                             **self.engine_options) as fleet:
                return await work(fleet)

        return self._guarded(lambda: run_async(main), ", ".join(conn_ids))

    def _guarded(self, call: Callable[[], T], conn_id: str) -> T:
        """`call()`, its errors mapped to what Airflow should do with them."""
        try:
            return call()
        except AirflowNotFoundException:
            message = (f"connection {conn_id!r} is not defined: add it (UI, `airflow "
                       f"connections add`, or AIRFLOW_CONN_{conn_id.upper()}) on every worker")
            self.log.error("%s", message)
            raise AirflowFailException(message) from None
        except DatabaseConnectionError as exc:
            message = f"connection {conn_id!r}: {exc}"
            self.log.error("%s", message)
            raise ArchifyConnectionFailed(message) from None
        except NOT_RETRYABLE as exc:
            raise AirflowFailException(str(exc)) from exc

    def fail_unreachable(self, unreachable: dict[str, str]) -> None:
        """Fail the task (retryable) when a database of the fleet could not be reached:
        one log line per connection; the others' work is done and reported."""
        if not unreachable:
            return
        for conn_id, why in unreachable.items():
            self.log.error("connection %r: %s", conn_id, why)
        raise ArchifyConnectionFailed("; ".join(f"connection {c!r}: {why}"
                                                for c, why in unreachable.items()))

    def log_event(self, event: Event) -> None:
        """One task-log line per schema, plus retries, notices and the final summary."""
        if isinstance(event, SchemaFinished):
            self._log_schema(event.result)
        elif isinstance(event, MigrationRetrying):
            self.log.warning("%s: %s hit %s; attempt %d in %.1fs", event.schema, event.version,
                             event.reason, event.attempt, event.delay_s)
        elif isinstance(event, Notice):
            self.log.info("%s", event.message)
        elif isinstance(event, RolloutFinished):
            self.log.info("rollout %s finished in %.2fs: %s", event.report.target,
                          event.report.duration_s, event.report.summary())

    def _log_schema(self, result: SchemaResult) -> None:
        applied = ", ".join(a.version for a in result.applied)
        if result.outcome is Outcome.FAILED and result.failure is not None:
            f = result.failure
            self.log.error("%s: FAILED at %s after %d attempt(s) [%s]: %s (applied before: %s)",
                           result.schema, f.version or "setup", f.attempts, f.sqlstate or "-",
                           f.message, applied or "nothing")
        elif result.outcome is Outcome.PLANNED:
            self.log.info("%s: would apply %s", result.schema, ", ".join(result.pending) or "-")
        elif result.outcome is Outcome.SKIPPED:
            self.log.warning("%s: skipped (max_failures reached)", result.schema)
        elif result.outcome is Outcome.UP_TO_DATE:
            self.log.info("%s: up to date", result.schema)
        else:
            self.log.info("%s: %s %s (%.0f ms)", result.schema, result.outcome.value.replace(
                "_", " "), applied, result.duration_ms)

    def finish(self, report: RolloutReport, context: Context) -> dict[str, Any]:
        """The report for XCom; fail the task, naming the schemas, if any failed.

        The report is pushed before failing so a summary task still sees this shard.
        """
        result = compact_report(report, database=self.archify_conn_id)
        if report.ok:
            return result
        context["ti"].xcom_push(key="return_value", value=result)
        raise ArchifyRolloutFailed(f"database {self.archify_conn_id}: "
                                   + describe_failures(result["failed"]))

    def finish_fleet(self, report: FleetReport, context: Context) -> dict[str, Any]:
        """`finish` for a rollout over several databases: every database named."""
        result = compact_fleet_report(report)
        if report.ok:
            return result
        context["ti"].xcom_push(key="return_value", value=result)
        failures = [f"database {r['database']}: {describe_failures(r['failed'])}"
                    for r in result["reports"] if r["failed"]]
        lost = [f"connection {c!r}: {why}" for c, why in report.unreachable.items()]
        for line in lost:
            self.log.error("%s", line)
        # only databases out: retryable, as when the task's one database is out
        failed = ArchifyRolloutFailed if failures else ArchifyConnectionFailed
        raise failed("; ".join([*failures, *lost]))


class ArchifyRolloutOperator(ArchifyBaseOperator):
    """What migrate and rollback share: ``max_failures`` and ``dry_run`` (both templated)."""

    template_fields: Sequence[str] = (
        *ArchifyBaseOperator.template_fields, "max_failures", "dry_run",
    )

    def __init__(
        self, *, max_failures: int | str | None = None, dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_failures = max_failures
        self.dry_run = dry_run

    def rollout_options(self) -> dict[str, Any]:
        """``max_failures`` and ``dry_run`` for ``engine.migrate`` / ``engine.rollback``."""
        return {"max_failures": _whole_number(self.max_failures, "max_failures"),
                "dry_run": as_bool(self.dry_run)}


class ArchifyMigrateOperator(ArchifyRolloutOperator):
    """Apply pending migrations: ``target`` "public", "tenants" or "all", or a list of ``tenants``.

    Every schema is attempted (unless ``max_failures`` stops new ones); then the task
    fails if any schema failed, naming them and their database. A retry re-runs only
    what is still pending. Map it over shards:
    ``ArchifyMigrateOperator.partial(...).expand(tenants=shards)``, or over the shards of
    several databases: ``.expand_kwargs(shards)`` (``ArchifyShardTenantsOperator`` with
    ``archify_conn_ids``). With ``archify_conn_ids`` it migrates every database at once,
    each named tenant in the database that holds it.

    :param target: "public", "tenants" or "all" (templated); default "all", or the
        tenant list when ``tenants`` is given.
    :param tenants: tenant slugs to migrate (templated; a list, or a comma-separated
        string). An empty list migrates nothing and succeeds.
    :param max_failures: stop starting new schemas after this many failures (templated).
    :param dry_run: report what would run, change nothing (templated).
    """

    template_fields: Sequence[str] = (*ArchifyRolloutOperator.template_fields, "target", "tenants")

    def __init__(
        self, *, target: str | None = None, tenants: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.tenants = tenants

    def resolved_target(self) -> str | list[str]:
        slugs = as_slugs(self.tenants)
        if slugs is None:
            return self.target or "all"
        if self.target not in (None, "", "tenants"):
            raise ValueError(f"give either target={self.target!r} or tenants, not both")
        return slugs

    def execute(self, context: Context) -> dict[str, Any]:
        target = self.resolved_target()
        if target == []:
            self.log.info("no tenants given: nothing to migrate")
            return compact_report(RolloutReport(target="", dry_run=as_bool(self.dry_run)))
        options = self.rollout_options()
        if self.connection_ids():
            fleet_report = self.run_fleet(lambda fleet: fleet.migrate(target, **options))
            return self.finish_fleet(fleet_report, context)
        report = self.run_engine(lambda engine: engine.migrate(target, **options))
        return self.finish(report, context)


class ArchifyRollbackOperator(ArchifyRolloutOperator):
    """Revert applied migrations, newest first, in "public", "tenants" or a list of slugs.

    :param target: "public", "tenants" or a list of slugs (templated). "all" is
        passed to the library, which refuses it (one scope at a time).
    :param to: revert down to this version, which stays applied (templated).
    :param steps: or revert this many migrations per schema (templated).
    :param dry_run: report what would be reverted, change nothing (templated).
    :param max_failures: stop starting new schemas after this many failures (templated).
    """

    template_fields: Sequence[str] = (*ArchifyRolloutOperator.template_fields, "target", "to",
                                      "steps")

    def __init__(
        self, *, target: str | Sequence[str], to: str | None = None,
        steps: int | str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.to = to
        self.steps = steps

    def execute(self, context: Context) -> dict[str, Any]:
        target: str | list[str]
        if isinstance(self.target, str) and self.target.strip() in ("public", "tenants", "all"):
            target = self.target.strip()  # "all": the library's own error says why not
        else:
            target = as_slugs(self.target) or []
        steps = None if self.steps in (None, "") else int(self.steps)
        options = self.rollout_options()
        report = self.run_engine(lambda engine: engine.rollback(
            target, to=self.to or None, steps=steps, **options))
        return self.finish(report, context)


class ArchifyStatusOperator(ArchifyBaseOperator, SkipMixin):
    """Pending work per schema, as counts (XCom) and one log line per schema with work.

    :param tenants: only these tenants (templated); default every tenant.
    :param short_circuit: when nothing is pending, skip every downstream task.
    """

    template_fields: Sequence[str] = (*ArchifyBaseOperator.template_fields, "tenants")
    inherits_from_skipmixin = True

    def __init__(
        self, *, tenants: Sequence[str] | str | None = None, short_circuit: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tenants = tenants
        self.short_circuit = short_circuit

    def execute(self, context: Context) -> dict[str, Any]:
        slugs = as_slugs(self.tenants) or None
        several = self.connection_ids() is not None
        if several:
            found = self.run_fleet(lambda fleet: fleet.status(tenants=slugs))
            self.fail_unreachable(found.unreachable)
            statuses = found.databases
        else:
            statuses = {"": self.run_engine(lambda engine: engine.status(slugs))}
        with_work = [(name, s) for name, status in statuses.items()
                     for s in [status.public, *status.tenants] if s.pending or s.problem]
        for name, schema in with_work[:MAX_LOGGED_SCHEMAS]:
            self.log.info("%s%s: pending %s%s", f"{name}/" if len(statuses) > 1 else "",
                          schema.schema, ", ".join(schema.pending) or "-",
                          f" (problem: {schema.problem})" if schema.problem else "")
        if len(with_work) > MAX_LOGGED_SCHEMAS:
            self.log.info("... and %d more schemas with pending work",
                          len(with_work) - MAX_LOGGED_SCHEMAS)
        result = compact_statuses(statuses) if several else compact_status(statuses[""])
        self.log.info("%d migration(s) pending: %s", result["pending_count"], result)
        if self.short_circuit and result["pending_count"] == 0:
            self.log.info("nothing pending: skipping downstream tasks")
            context["ti"].xcom_push(key="return_value", value=result)
            downstream = context["task"].get_flat_relatives(upstream=False)
            self.skip(ti=context["ti"], tasks=[t for t in downstream if not t.is_teardown])
        return result


class ArchifyDriftOperator(ArchifyBaseOperator):
    """Structural drift: tenants whose schema's structure differs from the reference
    (``Engine.structural_drift``), one log line per group of alike tenants.

    :param against: ``majority`` (the largest group of alike tenants) or ``migrations``
        (what the tenant migrations build, in a scratch schema rolled back) (templated).
    :param fail_on_drift: fail the task, without retries, naming the drifted tenants,
        when any tenant differs (templated); otherwise only report.
    :param enabled: when false (templated), check nothing and succeed: a DAG can carry
        the check and switch it on per run.
    """

    template_fields: Sequence[str] = (*ArchifyBaseOperator.template_fields, "against",
                                      "fail_on_drift", "enabled")

    def __init__(self, *, against: str = "majority", fail_on_drift: bool | str = True,
                 enabled: bool | str = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.against = against
        self.fail_on_drift = fail_on_drift
        self.enabled = enabled

    def execute(self, context: Context) -> dict[str, Any]:
        if not as_bool(self.enabled):
            self.log.info("structural drift check switched off")
            return {"checked": False}
        against = _given(self.against) or "majority"
        if self.connection_ids():
            reports, unreachable = self.run_fleet(
                lambda fleet: fleet.structural_drift(against=against))
            self.fail_unreachable(unreachable)
        else:
            reports = {"": self.run_engine(
                lambda engine: engine.structural_drift(against=against))}
        prefix = {name: f"{name}/" if len(reports) > 1 else "" for name in reports}
        lines = [prefix[n] + line for n, report in reports.items() for line in report.lines()]
        for line in lines[:MAX_LOGGED_SCHEMAS]:
            self.log.info("%s", line)
        drifted = [prefix[n] + s for n, report in reports.items() for s in report.drifted]
        alike = sum(len(report.alike) for report in reports.values())
        result = {"checked": True, "against": against, "ok": not drifted,
                  "alike_count": alike, "drifted_count": len(drifted),
                  "drifted": drifted[:MAX_LOGGED_SCHEMAS],
                  "groups": lines[:MAX_LOGGED_SCHEMAS]}
        self.log.info("%d tenant(s) alike, %d drifted (reference: %s)",
                      alike, len(drifted), against)
        if drifted and as_bool(self.fail_on_drift):
            names = ", ".join(drifted[:20]) + (f" and {len(drifted) - 20} more"
                                                if len(drifted) > 20 else "")
            raise AirflowFailException(
                f"structural drift in {len(drifted)} tenant(s): {names}; run `archify drift` "
                "for how they differ, repair them, then run again")
        return result


class ArchifyShardTenantsOperator(ArchifyBaseOperator):
    """The registered tenants in shards, for ``ArchifyMigrateOperator.partial().expand()``.

    With ``archify_conn_ids`` (several databases) it returns one entry per shard,
    ``{"archify_conn_id": ..., "tenants": [...]}``, for ``.expand_kwargs()``: each
    database's tenants in shards of their own. It then also chooses the canaries: those
    named in ``canary`` (wherever they are) and the first ``canary_per_database`` of
    every database, pushed as XCom ``canary`` and left out of the shards.

    :param shard_size: tenants per shard (templated): one mapped task per shard.
    :param tenants: only these tenants (templated); default every registered tenant.
        Naming an unregistered tenant fails the task.
    :param exclude: tenants to leave out, e.g. the canaries already migrated (templated).
    :param canary: with ``archify_conn_ids``: canary tenants (templated).
    :param canary_per_database: with ``archify_conn_ids``: this many more canaries from
        every database (templated).
    :param pending_only: leave out tenants with nothing pending (a re-run then maps
        only the shards that still have work).
    """

    template_fields: Sequence[str] = (
        *ArchifyBaseOperator.template_fields, "shard_size", "tenants", "exclude", "canary",
        "canary_per_database",
    )

    def __init__(
        self, *, shard_size: int | str = 50, tenants: Sequence[str] | str | None = None,
        exclude: Sequence[str] | str | None = None, canary: Sequence[str] | str | None = None,
        canary_per_database: int | str = 0, pending_only: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard_size = shard_size
        self.tenants = tenants
        self.exclude = exclude
        self.canary = canary
        self.canary_per_database = canary_per_database
        self.pending_only = pending_only

    def execute(self, context: Context) -> list[list[str]] | list[dict[str, object]]:
        if self.connection_ids():
            return self._plan_fleet(context)
        slugs = self.run_engine(self._select)
        shards = shard(slugs, int(self.shard_size))
        self.log.info("%d tenant(s) in %d shard(s) of up to %s; excluded: %s", len(slugs),
                      len(shards), self.shard_size, ", ".join(as_slugs(self.exclude) or []) or "-")
        return shards

    async def _select(self, engine: Engine) -> list[str]:
        registered = [t.slug for t in await engine.list_tenants()]
        chosen = select_tenants(registered, only=as_slugs(self.tenants) or None,
                                exclude=as_slugs(self.exclude) or ())
        if not self.pending_only or not chosen:
            return chosen
        status = await engine.status(chosen)
        pending = {t.slug for t in status.tenants if t.pending}
        return [slug for slug in chosen if slug in pending]

    def _plan_fleet(self, context: Context) -> list[dict[str, object]]:
        registered = self.run_fleet(self._registered)
        only = as_slugs(self.tenants) or None
        canaries = choose_canaries(
            registered, as_slugs(self.canary) or (),
            _whole_number(self.canary_per_database, "canary_per_database") or 0, only=only)
        plans = plan_shards(registered, int(self.shard_size), only=only,
                            exclude=[*(as_slugs(self.exclude) or ()), *canaries])
        for database, slugs in registered.items():
            mine = [p for p in plans if p["archify_conn_id"] == database]
            self.log.info("%s: %d tenant(s) registered, %d shard(s), canaries: %s", database,
                          len(slugs), len(mine),
                          ", ".join(c for c in canaries if c in set(slugs)) or "-")
        context["ti"].xcom_push(key="canary", value=canaries)
        return plans

    async def _registered(self, fleet: Fleet) -> dict[str, list[str]]:
        """Each database's registered slugs (with ``pending_only``: those with work)."""
        listed, unreachable = await fleet.list_tenants()
        self.fail_unreachable(unreachable)
        registered = {db: [t.slug for t in tenants] for db, tenants in listed.items()}
        if not self.pending_only:
            return registered
        found = await fleet.status()
        pending = {t.slug for status in found.databases.values() for t in status.tenants
                   if t.pending}
        return {db: [s for s in slugs if s in pending] for db, slugs in registered.items()}


class ArchifyCreateTenantOperator(ArchifyBaseOperator):
    """Create a tenant whole (schema, ledger, every tenant migration, seed, registry row).

    :param slug: the tenant's slug (templated).
    :param name: display name (templated); default the slug.
    :param admin_email: passed to the ``seed_admin`` hook (templated).
    :param migrate: False registers an empty tenant that a later rollout migrates.
    :param if_not_exists: succeed (``created: false``) when the tenant already exists.
    """

    template_fields: Sequence[str] = (
        *ArchifyBaseOperator.template_fields, "slug", "tenant_name", "admin_email",
    )

    def __init__(
        self, *, slug: str, tenant_name: str | None = None, admin_email: str | None = None,
        migrate: bool = True, if_not_exists: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.slug = slug
        self.tenant_name = tenant_name
        self.admin_email = admin_email
        self.migrate = migrate
        self.if_not_exists = if_not_exists

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            tenant = self.run_engine(lambda engine: engine.create_tenant(
                self.slug, self.tenant_name or None, admin_email=self.admin_email or None,
                migrate=self.migrate))
        except TenantExistsError as exc:
            if not self.if_not_exists:
                raise
            self.log.info("%s", exc)
            return {"slug": self.slug, "created": False}
        self.log.info("created tenant %s in schema %s", tenant.slug, tenant.schema)
        return {"slug": tenant.slug, "schema": tenant.schema, "name": tenant.name,
                "created": True}


# -- templated values ------------------------------------------------------------------
# Without render_template_as_native_obj, "{{ params.x }}" renders lists and booleans
# as strings; accept both forms.


def as_bool(value: bool | str | None) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def as_slugs(value: Sequence[str] | str | None) -> list[str] | None:
    """A list of slugs from a list, "a,b", "['a', 'b']", or None (meaning: not given)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None"):
            return None if text == "None" else []
        if text.startswith("["):
            return [str(s) for s in ast.literal_eval(text)]
        return [s.strip() for s in text.split(",") if s.strip()]
    return [str(s) for s in value]
