"""Choosing and splitting the tenants of a rollout. Pure: no Airflow, no I/O.

One mapped Airflow task per shard is how a fleet rollout spreads over workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from archify_core import TenantNotFoundError


def select_tenants(
    registered: Sequence[str], *, only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """The registered slugs, restricted to `only` (if given), minus `exclude`, in order.

    Naming an unregistered tenant in `only` is an error: a typo must not shrink a rollout
    silently.
    """
    known = set(registered)
    if only is not None:
        missing = sorted(set(only) - known)
        if missing:
            raise TenantNotFoundError(
                f"not registered in public.tenants: {', '.join(missing)}; "
                "create them with `archify create-tenant SLUG` first"
            )
        wanted = set(only)
        registered = [slug for slug in registered if slug in wanted]
    skip = set(exclude)
    return [slug for slug in registered if slug not in skip]


def shard(slugs: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive shards of at most `size` slugs (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"shard size must be at least 1, not {size}")
    return [list(slugs[i:i + size]) for i in range(0, len(slugs), size)]


def choose_canaries(
    registered: Mapping[str, Sequence[str]], named: Sequence[str] = (), per_database: int = 0,
    *, only: Sequence[str] | None = None,
) -> list[str]:
    """The canary tenants: those `named` (each must be registered in some database), then
    the first `per_database` other tenants of every database (of those in `only`, if
    given), so that each database meets the migration in a few schemas before all of
    its tenants do."""
    known = {slug for slugs in registered.values() for slug in slugs}
    missing = [slug for slug in named if slug not in known]
    if missing:
        raise TenantNotFoundError(
            f"canary tenant(s) registered in no database: {', '.join(missing)}")
    chosen = list(dict.fromkeys(named))
    wanted = None if only is None else set(only)
    for slugs in registered.values():
        chosen += [slug for slug in slugs if slug not in chosen
                   and (wanted is None or slug in wanted)][:max(per_database, 0)]
    return chosen


def plan_shards(
    registered: Mapping[str, Sequence[str]], size: int, *,
    only: Sequence[str] | None = None, exclude: Sequence[str] = (),
) -> list[dict[str, object]]:
    """Shards over several databases, for ``.expand_kwargs()``: one entry per shard,
    ``{"archify_conn_id": database, "tenants": [...]}``, each database's tenants split
    on their own (a shard never spans two databases). `only` and `exclude` name slugs
    anywhere in the fleet; naming one that no database holds is an error."""
    if only is not None:
        known = {slug for slugs in registered.values() for slug in slugs}
        missing = sorted(set(only) - known)
        if missing:
            raise TenantNotFoundError(
                f"registered in no database of the rollout: {', '.join(missing)}; "
                "create them with `archify create-tenant SLUG` first")
    wanted = None if only is None else set(only)
    plans: list[dict[str, object]] = []
    for database, slugs in registered.items():
        mine = select_tenants(slugs, only=None, exclude=exclude)
        if wanted is not None:
            mine = [slug for slug in mine if slug in wanted]
        plans += [{"archify_conn_id": database, "tenants": part} for part in shard(mine, size)]
    return plans
