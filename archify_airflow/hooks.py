"""ArchifyHook: an Airflow connection turned into a DSN and an Archify Engine.

The hook owns the connection; operators own the parameters and build the hook
lazily in `execute`, so parsing a DAG never looks a connection up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlunsplit

from airflow.sdk import BaseHook, Connection

from archify_core import Engine, MigrationSet
from archify_core.event_loop import run_async

# libpq/asyncpg connection parameters an Airflow connection's extra may carry.
# Anything else in extra (the postgres provider's "cursor", "iam", ...) is not a
# connection parameter: asyncpg would send it to the server as a setting.
PASSTHROUGH_EXTRAS = (
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "passfile",
    "target_session_attrs", "application_name",
)


def connection_to_dsn(conn: Connection) -> str:
    """A postgresql:// DSN from a Postgres-style Airflow connection.

    A host starting with "/" (or, with an empty host, extra["host"]) is a unix-socket
    directory and goes to the query string, which is how libpq and asyncpg take it.
    Credentials and the database name are percent-quoted.
    """
    extra = conn.extra_dejson
    host = conn.host or ""
    socket_dir = host if host.startswith("/") else ("" if host else extra.get("host", ""))
    query: dict[str, str] = {}
    if socket_dir:
        query["host"] = str(socket_dir)
        if conn.port:
            query["port"] = str(conn.port)
    netloc = _userinfo(conn.login, conn.password)
    if not socket_dir:
        netloc += f"[{host}]" if ":" in host else host
        if conn.port:
            netloc += f":{conn.port}"
    query.update({k: str(extra[k]) for k in PASSTHROUGH_EXTRAS if extra.get(k) not in (None, "")})
    path = "/" + quote(conn.schema, safe="") if conn.schema else ""
    return urlunsplit(("postgresql", netloc, path, urlencode(query, quote_via=quote, safe="/"), ""))


def _userinfo(login: str | None, password: str | None) -> str:
    if not login:
        return ""
    user = quote(login, safe="")
    return f"{user}:{quote(password, safe='')}@" if password else f"{user}@"


class ArchifyHook(BaseHook):
    """Connects Archify to the PostgreSQL database of an Airflow connection.

    Any Postgres-style connection works (type `archify` or `postgres`), including
    `AIRFLOW_CONN_<ID>` environment variables such as
    `postgresql://user:secret@db:5432/app` or `postgresql://user@/app?host=/run/postgresql`.
    """

    conn_name_attr = "archify_conn_id"
    default_conn_name = "archify_default"
    conn_type = "archify"
    hook_name = "Archify (PostgreSQL)"

    def __init__(self, archify_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.archify_conn_id = archify_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: Postgres fields; a socket directory goes in Host."""
        return {
            "hidden_fields": [],
            "relabeling": {"schema": "Database"},
            "placeholders": {
                "host": "db.example.com or a socket directory such as /run/postgresql",
                "extra": '{"sslmode": "require"}',
            },
        }

    def get_dsn(self) -> str:
        """The DSN of this hook's connection (contains the password: never log it)."""
        return connection_to_dsn(self.get_connection(self.archify_conn_id))

    def get_engine(self, migrations: str | Path, **engine_options: Any) -> Engine:
        """An Engine on this connection, not yet opened: use it with `async with`."""
        return Engine(self.get_dsn(), migrations=migrations, **engine_options)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: open the engine (connects, reads the server's limits)."""
        async def probe() -> None:
            async with Engine(self.get_dsn(), migrations=MigrationSet(()), load_entry_points=False):
                pass

        try:
            run_async(probe)
        except Exception as exc:  # the button shows the message; nothing to re-raise to
            return False, str(exc)
        return True, "Connection successfully tested"

