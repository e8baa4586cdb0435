"""The suite's PostgreSQL: the embedded server, started once, a fresh database per test.

ARCHIFY_TEST_DSN points the suite at another server instead (its database is
used only to create and drop the per-test databases).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from archify_core.embedded import embedded_server, with_database
from tests.fleet import execute

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MIGRATIONS = ROOT / "migrations"
_counter = itertools.count()


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    external = os.environ.get("ARCHIFY_TEST_DSN")
    if external:
        yield external
        return
    base = Path(tempfile.mkdtemp(prefix="archify-test-"))
    base.chmod(0o755)
    with embedded_server(base / "pg", cleanup_mode="delete") as uri:
        _run_admin(uri, "ALTER SYSTEM SET fsync = off",
                   "ALTER SYSTEM SET synchronous_commit = off",
                   "ALTER SYSTEM SET full_page_writes = off",
                   "SELECT pg_reload_conf()")
        yield uri
    shutil.rmtree(base, ignore_errors=True)


def _run_admin(dsn: str, *statements: str) -> None:
    import anyio

    anyio.run(execute, dsn, *statements)


def _new_database(server_dsn: str) -> Iterator[str]:
    name = f"archify_t{os.getpid()}_{next(_counter)}"
    _run_admin(server_dsn, f'CREATE DATABASE "{name}"')
    yield with_database(server_dsn, name)
    _run_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(server_dsn: str) -> Iterator[str]:
    """A DSN to a new, empty database, dropped after the test."""
    yield from _new_database(server_dsn)


@pytest.fixture
def second_dsn(server_dsn: str) -> Iterator[str]:
    """Another new, empty database beside `dsn` (a fleet of two), dropped after the test."""
    yield from _new_database(server_dsn)


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A writable copy of the example migrations."""
    target = tmp_path / "migrations"
    shutil.copytree(EXAMPLE_MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target
