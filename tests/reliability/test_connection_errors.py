"""Connection problems: a message a user understands, no traceback, exit 2, and the
password never printed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from archify_core import Engine
from archify_core.errors import DatabaseConnectionError
from tests.conftest import EXAMPLE_MIGRATIONS
from tests.reliability.conftest import PrivateServer
from tests.reliability.helpers import assert_clean_error, cli


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when we return: nothing listens


def _cases(server: PrivateServer) -> dict[str, tuple[str, list[str]]]:
    secret = "s3cr3t-never-shown"
    return {
        "not a postgres url": ("mysql://root@localhost/app", ["must start with postgresql://"]),
        "garbage": ("not a dsn at all", ["invalid DSN"]),
        "bad port": ("postgresql://u@127.0.0.1:notaport/db", ["invalid DSN"]),
        "wrong password": (server.dsn("postgres", password=secret),
                           ["authentication failed", "Check the user and password"]),
        "unknown user": (server.dsn("postgres", user="nobody", password=secret),
                         ["authentication failed"]),
        "database missing": (server.dsn("no_such_db"),
                             ["database does not exist", "no_such_db", "createdb"]),
        "nothing listening": (f"postgresql://u:{secret}@127.0.0.1:{_closed_port()}/db",
                              ["cannot connect to", "Is the server running?"]),
        "unresolvable host": (f"postgresql://u:{secret}@no-such-host.invalid:5432/db",
                              ["cannot resolve the host"]),
    }


CASE_NAMES = ["not a postgres url", "garbage", "bad port", "wrong password", "unknown user",
              "database missing", "nothing listening", "unresolvable host"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_cli_connection_problems_exit_2_with_a_clear_message(
    private_server: PrivateServer, case: str
) -> None:
    dsn, needles = _cases(private_server)[case]
    for command in (["status"], ["all"], ["create-tenant", "acme"]):
        result = cli("--migrations", str(EXAMPLE_MIGRATIONS), *command, dsn=dsn, timeout=90)
        assert_clean_error(result, *needles)
        assert "s3cr3t" not in result.stdout + result.stderr
        assert private_server.password not in result.stdout + result.stderr


@pytest.mark.parametrize("case", CASE_NAMES)
async def test_api_connection_problems_raise_database_connection_error(
    private_server: PrivateServer, case: str, tmp_path: Path
) -> None:
    dsn, needles = _cases(private_server)[case]
    with pytest.raises(DatabaseConnectionError) as caught:
        async with Engine(dsn, EXAMPLE_MIGRATIONS, load_entry_points=False):
            pass
    for needle in needles:
        assert needle in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("dsn", [
    "postgresql://app:p%40ss%2Fw0rd@db.internal:5432/app",
    "postgresql://app:plain-secret@db.internal/app",
])
def test_a_message_that_quotes_the_password_is_scrubbed(dsn: str) -> None:
    from urllib.parse import unquote, urlsplit

    from archify_core.dsn import scrub

    password = urlsplit(dsn).password
    assert password
    text = f"driver said: could not use {dsn} (password {unquote(password)!r})"
    scrubbed = scrub(text, dsn)
    assert password not in scrubbed and unquote(password) not in scrubbed
    assert "postgresql://app:***@db.internal" in scrubbed
    assert scrub("nothing secret here", dsn) == "nothing secret here"
