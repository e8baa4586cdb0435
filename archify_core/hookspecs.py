"""Every hook Archify calls, one spec each (pluggy project name "archify").

Specs are plain functions; an implementation may be a plain or an `async def`
function (or a plain function that returns an awaitable), and the engine awaits
what needs awaiting before it calls the next implementation. Hooks are always
called by keyword, so an implementation may accept only the arguments it
needs, and specs can grow new arguments later. docs/hooks.md documents each
one with its exact signature; a test fails if the two drift apart.

In the order a rollout calls them: rollout_started, then per schema with
pending work before_schema, after_migration (per migration), on_failure (if it
failed) and after_schema, then rollout_finished. Creating a tenant calls
seed_admin inside its transaction and tenant_created after the commit. Linting
(`archify lint`, and the warnings before a rollout) calls lint_rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import asyncpg

    from .ledger import Tenant
    from .lint import Rule
    from .report import AppliedMigration, Failure, RolloutReport, SchemaResult

PROJECT = "archify"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- rollouts (migrate and rollback) ---------------------------------------------


@hookspec
def archify_rollout_started(target: str, schemas: int, dry_run: bool) -> None:
    """Called once before a rollout starts work on any schema.

    `target` is what was asked for ("public", "tenants", "all", slugs joined
    by commas, or "rollback ..." for a rollback) and `schemas` how many schemas
    are in scope. An exception raised here is logged and the rollout goes on.
    """


@hookspec
def archify_before_schema(
    schema: str, slug: str | None, pending: tuple[str, ...], database: str | None
) -> None:
    """Called before the first pending migration of a schema runs.

    Only called for schemas with pending work (not for dry runs). `slug` is
    None for `public`; `pending` lists the versions about to run (to revert,
    in a rollback). Raising here fails that schema before anything runs in it
    (reported with the hook's error); the rest of the rollout goes on. Use it
    as a gate: maintenance windows, per-tenant opt-outs, pre-flight checks.
    `database` is the name of the fleet database the schema is in (None for an
    engine outside a fleet); like every argument, take it only if you need it.
    """


@hookspec
def archify_after_migration(
    schema: str, slug: str | None, applied: AppliedMigration, direction: str,
    database: str | None,
) -> None:
    """Called after each migration was committed in a schema, with its version and
    duration; `direction` is "up" (applied) or "down" (reverted by a rollback);
    `database` the fleet database's name (None outside a fleet).

    An exception raised here is logged; the migration stays applied and the
    schema goes on with its next migration.
    """


@hookspec
def archify_on_failure(
    schema: str, slug: str | None, version: str | None, error: BaseException, failure: Failure,
    database: str | None,
) -> None:
    """Called when a schema fails, before archify_after_schema.

    `version` is the failing migration (None when the failure came before any
    migration ran, e.g. from a before_schema hook); `error` is the exception and
    `failure` what the report will say; `database` the fleet database's name (None
    outside a fleet). An exception raised here is logged and
    never hides the original error, and the other on_failure implementations
    are still called.
    """


@hookspec
def archify_after_schema(result: SchemaResult) -> None:
    """Called after Archify finished with a schema that had pending work,
    successfully or not, with that schema's result (outcome, applied migrations,
    failure, and `result.database`: the fleet database's name, None outside a
    fleet). An exception raised here is logged and changes no result.
    """


@hookspec
def archify_rollout_finished(report: RolloutReport) -> None:
    """Called once when a rollout has finished, with its full report (also after a
    dry run). An exception raised here is logged and changes no result.
    """


# -- tenants ---------------------------------------------------------------------


@hookspec
def archify_seed_admin(
    conn: asyncpg.Connection, slug: str, schema: str, name: str, admin_email: str | None
) -> None:
    """Seed a new tenant, inside the transaction that creates it.

    `conn` is an asyncpg connection whose search_path is the new tenant's
    schema alone, with every tenant migration already applied. Raising here
    rolls back the whole tenant creation: no schema, no registry row remains.
    Not called when the tenant is created without its migrations
    (`migrate=False`). The built-in plugin "archify.defaults" implements it
    (an admin row in `users` when `admin_email` is given).
    """


@hookspec
def archify_tenant_created(tenant: Tenant, admin_email: str | None) -> None:
    """Called after a tenant's creation was committed (schema, migrations, seed,
    registry row). For work outside the database: a welcome mail, provisioning.
    An exception raised here is logged; the tenant stays created.
    """


@hookspec
def archify_tenant_dropped(tenant: Tenant) -> None:
    """Called after a tenant's schema and registry row were dropped and committed.
    An exception raised here is logged; the tenant stays dropped.
    """


# -- linting ---------------------------------------------------------------------


@hookspec
def archify_lint_rules() -> list[Rule]:
    """Return lint rules to check besides the built-in ones (`archify_core.lint.Rule`
    values: an id, a severity, the safe way, and `check(ctx)` yielding a `Hit` per
    unsafe statement of `ctx.statements`, pglast nodes with their file line).

    Called once each time migrations are linted; the rules' findings are silenced,
    configured and weighed over the fleet like the built-in ones. An exception
    raised here (or by a rule) propagates, naming the plugin.
    """
