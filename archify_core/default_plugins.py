"""Archify's built-in hook implementations, registered like any other plugin.

Replace one by registering your own implementation and blocking this plugin
(`pm.set_blocked("archify.defaults")`), or add to it with another plugin.
"""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl


@hookimpl
async def archify_seed_admin(conn: Any, name: str, admin_email: str | None) -> None:
    """Insert the tenant's first admin into its `users` table, when an email is given."""
    if admin_email is None:
        return
    has_users = await conn.fetchval("SELECT to_regclass('users') IS NOT NULL")
    if not has_users:
        return
    await conn.execute(
        "INSERT INTO users (email, full_name, is_admin) VALUES ($1, $2, TRUE)",
        admin_email,
        f"{name} admin",
    )
