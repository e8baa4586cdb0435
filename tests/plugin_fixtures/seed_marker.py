"""A seed_admin plugin for the --plugin tests: its row in `users` proves it ran."""

from __future__ import annotations

import asyncpg

from archify_core import hookimpl

MARKER_EMAIL = "seeded-by-plugin@example.com"


class SeedMarker:
    @hookimpl
    async def archify_seed_admin(self, conn: asyncpg.Connection, slug: str) -> None:
        await conn.execute(
            "INSERT INTO users (email, full_name) VALUES ($1, $2)", MARKER_EMAIL, f"plugin:{slug}"
        )


plugin = SeedMarker()
