"""Archify's built-in hook implementations: an ordinary plugin named "archify.defaults".

Nothing here is special-cased by the engine. Replace it by blocking the name
"archify.defaults" (`Engine(blocked_plugins=["archify.defaults"])`,
`archify --block-plugin archify.defaults`, or `engine.pm.set_blocked(...)`)
and registering your own implementation, or add to it with another plugin.
"""

from __future__ import annotations

import asyncpg

from .hookspecs import hookimpl

ADMIN_COLUMNS = ("email", "full_name", "is_admin")


@hookimpl
async def archify_seed_admin(
    conn: asyncpg.Connection, schema: str, name: str, admin_email: str | None
) -> None:
    """Insert the tenant's first admin into its `users` table, when an email is given.

    Fills the columns of the guide's `users` table that exist (email is needed;
    full_name and is_admin when present), so a leaner users table still works.
    An email given for a tenant that cannot take it fails the creation rather
    than being dropped without a word.
    """
    if admin_email is None:
        return
    columns = await _users_columns(conn, schema)
    if "email" not in columns:
        raise LookupError(
            f"admin_email was given but {schema} has no users table with an email column; "
            'block the "archify.defaults" plugin and seed the tenant with your own '
            "archify_seed_admin hook (docs/hooks.md)"
        )
    values = {"email": admin_email, "full_name": f"{name} admin", "is_admin": True}
    names = [c for c in ADMIN_COLUMNS if c in columns]
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    await conn.execute(
        f"INSERT INTO users ({', '.join(names)}) VALUES ({placeholders})",
        *(values[c] for c in names),
    )


async def _users_columns(conn: asyncpg.Connection, schema: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'users'",
        schema,
    )
    return {r["column_name"] for r in rows}
