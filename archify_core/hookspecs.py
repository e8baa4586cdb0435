"""Every hook Archify calls, one spec each (pluggy project name "archify").

Specs are plain functions; an implementation may be a plain or an `async def`
function, and the engine awaits what needs awaiting. Hooks are always called by
keyword, so an implementation may accept only the arguments it needs, and
specs can grow new arguments later. docs/hooks.md documents each one; a test
fails if the two drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .report import Failure, RolloutReport, SchemaResult

PROJECT = "archify"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def archify_rollout_started(target: str, schemas: int, dry_run: bool) -> None:
    """Called once before a rollout starts work on any schema.

    `target` is what was asked for ("public", "tenants", "all" or a list of
    slugs joined by commas) and `schemas` how many schemas are in scope.
    """


@hookspec
def archify_before_schema(schema: str, slug: str | None, pending: tuple[str, ...]) -> None:
    """Called before the first pending migration of a schema runs.

    Only called for schemas with pending work. Raising here fails that schema
    (reported with the hook's error) before anything runs in it; the rest of
    the rollout goes on.
    """


@hookspec
def archify_after_schema(result: SchemaResult) -> None:
    """Called after Archify finished with a schema that had pending work,
    successfully or not, with that schema's result.
    """


@hookspec
def archify_on_failure(
    schema: str, slug: str | None, version: str | None, error: BaseException, failure: Failure
) -> None:
    """Called when a migration fails in a schema (before archify_after_schema).

    `version` is the failing migration (None when the failure came before any
    migration ran, e.g. in a before_schema hook). An exception raised here is
    logged and never hides the original error.
    """


@hookspec
def archify_seed_admin(
    conn: Any, slug: str, schema: str, name: str, admin_email: str | None
) -> None:
    """Seed a new tenant, inside the transaction that creates it.

    `conn` is an asyncpg connection whose search_path is the new tenant's
    schema, with every tenant migration already applied. Raising here rolls
    back the whole tenant creation: no schema, no registry row remains.
    """


@hookspec
def archify_rollout_finished(report: RolloutReport) -> None:
    """Called once when a rollout has finished, with its full report."""
