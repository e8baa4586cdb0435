"""Finding the database and connecting to it, with errors a user can act on."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .errors import DatabaseConnectionError

DSN_ENV_VARS = ("ARCHIFY_DSN", "DATABASE_URL")


def dsn_from_env(environ: dict[str, str] | None = None) -> str | None:
    """ARCHIFY_DSN, else DATABASE_URL, else None (the caller may start the embedded server)."""
    env = os.environ if environ is None else environ
    for name in DSN_ENV_VARS:
        if env.get(name):
            return env[name]
    return None


def redact(dsn: str) -> str:
    """The DSN with its password replaced, safe for messages and logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def scrub(text: str, dsn: str) -> str:
    """The text with the DSN's password, wherever it appears, replaced by ***."""
    from urllib.parse import unquote

    try:
        password = urlsplit(dsn).password
    except ValueError:
        return text.replace(dsn, "<unparseable DSN>")
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text


def check_dsn(dsn: str) -> None:
    """Reject what asyncpg would choke on with a traceback, before connecting."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise DatabaseConnectionError(
            f"invalid DSN {redact(dsn)!r}: it must start with postgresql:// "
            "(e.g. postgresql://user:password@host:5432/dbname)"
        )


def connection_error(exc: BaseException, dsn: str) -> DatabaseConnectionError:
    """Translate what asyncpg or the OS raised on connect into one clear error."""
    where = redact(dsn)
    auth_errors = asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    if isinstance(exc, auth_errors):
        text = f"authentication failed for {where}: {exc}. Check the user and password."
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        text = f"database does not exist at {where}: {exc}. Create it (createdb) or fix the DSN."
    elif isinstance(exc, asyncpg.TooManyConnectionsError):
        text = (f"the server at {where} has no free connection slots: {exc}. "
                "Lower --concurrency or raise max_connections.")
    elif isinstance(exc, socket.gaierror):
        text = f"cannot resolve the host in {where}: {exc}"
    elif isinstance(exc, TimeoutError):
        text = f"timed out connecting to {where}; is the server up and reachable?"
    elif isinstance(exc, OSError):
        text = f"cannot connect to {where}: {exc.strerror or exc}. Is the server running?"
    elif isinstance(exc, ValueError | asyncpg.ClientConfigurationError):
        text = f"invalid DSN {where}: {exc}"
    else:
        text = f"cannot connect to {where}: {type(exc).__name__}: {exc}"
    return DatabaseConnectionError(text)
