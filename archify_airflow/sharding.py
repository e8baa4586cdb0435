"""Choosing and splitting the tenants of a rollout. Pure: no Airflow, no I/O.

One mapped Airflow task per shard is how a fleet rollout spreads over workers.
"""

from __future__ import annotations

from collections.abc import Sequence

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
