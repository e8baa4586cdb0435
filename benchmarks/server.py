"""The benchmark's PostgreSQL: the embedded server (or --dsn), admin SQL, the
DSN rewriting the latency proxy needs, and the measured round trip."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg

from archify_core.embedded import embedded_server, with_database
from archify_core.sql import quote_ident


@contextmanager
def server(dsn: str | None, data_dir: Path | None = None) -> Iterator[str]:
    """The admin DSN of the server to use: `dsn` as given, or a fresh embedded server
    whose data folder is made inside `data_dir` (default: the system's temporary folder)
    and deleted afterwards. Benchmarks keep fsync and synchronous_commit at their
    defaults."""
    if dsn:
        yield dsn
        return
    base = Path(tempfile.mkdtemp(prefix="archify-bench-", dir=data_dir))
    base.chmod(0o755)
    try:
        with embedded_server(base / "pg", cleanup_mode="delete") as uri:
            yield uri
    finally:
        shutil.rmtree(base, ignore_errors=True)


def database_dsn(admin_dsn: str, name: str) -> str:
    return with_database(admin_dsn, name)


async def admin(admin_dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    await admin(admin_dsn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def socket_target(dsn: str) -> tuple[str, str | int]:
    """Where the server listens, for the latency proxy: ("unix", path) or (host, port)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = (query.get("host") or [parts.hostname or "localhost"])[0]
    port = int((query.get("port") or [parts.port or 5432])[0])
    if host.startswith("/"):
        return "unix", f"{host}/.s.PGSQL.{port}"
    return host, port


def via_proxy(dsn: str, port: int) -> str:
    """The same DSN (user, password, database) pointed at 127.0.0.1:`port`."""
    parts = urlsplit(dsn)
    user = quote(parts.username or "postgres")
    password = f":{quote(parts.password)}" if parts.password else ""
    return f"postgresql://{user}{password}@127.0.0.1:{port}{parts.path or '/postgres'}"


async def round_trip_ms(dsn: str, count: int = 200) -> float:
    """The measured time of one `SELECT 1` round trip."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        for _ in range(count):
            await conn.execute("SELECT 1")
        return (time.perf_counter() - started) / count * 1000
    finally:
        await conn.close()
