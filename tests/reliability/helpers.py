"""A fleet whose migrations leave evidence, and the checks that read it.

Every tracked tenant migration adds a column to `users` (without IF NOT
EXISTS, so a second application would fail) and appends a row to
`public.apply_log` in the same transaction. After any fault the database must
then satisfy, per tenant schema:

- its ledger holds a prefix of the tenant migrations, in order (a migration
  boundary, or untouched);
- the objects match the ledger: `users` exists iff 002 is recorded, column
  `<step>` exists iff that step is recorded;
- `apply_log` has exactly one row per recorded step and none for the others
  (nothing applied twice, nothing applied without its ledger row).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from archify_core import Engine, digest
from archify_core.sql import quote_ident
from tests.conftest import EXAMPLE_MIGRATIONS
from tests.fleet import add_migration, register_tenants

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BASE_TENANT = "002_create_tenant_tables"
APPLY_LOG = """
CREATE TABLE IF NOT EXISTS public.apply_log (
    schema_name text NOT NULL,
    version text NOT NULL,
    backend_pid int NOT NULL DEFAULT pg_backend_pid()
)"""


def tracked_migrations(folder: Path, steps: int, *, sleep: float = 0.0, start: int = 10) -> Path:
    """001 (public registry) and 002 (tenant tables) from the examples, then `steps`
    tracked tenant migrations that each take about `sleep` seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("001_create_public_tables.py", "002_create_tenant_tables.py"):
        shutil.copy(EXAMPLE_MIGRATIONS / name, folder / name)
    add_steps(folder, steps, sleep=sleep, start=start)
    return folder


def step_version(number: int) -> str:
    return f"{number:03d}_step_{number}"


def add_steps(folder: Path, steps: int, *, sleep: float = 0.0, start: int | None = None) -> None:
    """Append `steps` tracked migrations after the newest one in `folder`."""
    if start is None:
        start = max(int(p.name.split("_", 1)[0]) for p in folder.glob("*.py")) + 1
    for number in range(start, start + steps):
        version = step_version(number)
        statements = [f"ALTER TABLE users ADD COLUMN step_{number} int"]
        if sleep:
            statements.append(f"SELECT pg_sleep({sleep})")
        statements.append("INSERT INTO public.apply_log (schema_name, version) "
                          f"VALUES (current_schema(), '{version}')")
        if number % 3 == 0:  # every third step is a Python migration (client-driven txn)
            _python_migration(folder, version, statements)
        else:
            add_migration(folder, version, "tenant", ";\n".join(statements) + ";")


def _python_migration(folder: Path, version: str, statements: list[str]) -> None:
    """An `async def upgrade(conn)` migration sending each statement on its own, so a
    kill can land between two statements of its transaction."""
    body = "".join(f"    await conn.execute({s!r})\n" for s in statements)
    (folder / f"{version}.py").write_text(
        f'"""\nPython step\n\n# MIGRATION_SCOPE: tenant\n# MIGRATION_VERSION: {version}\n'
        f'# MIGRATION_DESCRIPTION: {version}\n"""\n\n\nasync def upgrade(conn):\n{body}'
    )


def tenant_versions(folder: Path) -> list[str]:
    return [BASE_TENANT] + sorted(p.stem for p in folder.glob("*_step_*.py"))


async def build_fleet(dsn: str, folder: Path, tenants: int, prefix: str = "t") -> list[str]:
    """Migrate public, create the apply log and register `tenants` empty tenants."""
    async with Engine(dsn, folder, load_entry_points=False) as engine:
        report = await engine.migrate("public")
        assert report.ok, report.to_dict()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(APPLY_LOG)
    finally:
        await conn.close()
    slugs = [f"{prefix}{i:04d}" for i in range(tenants)]
    await register_tenants(dsn, slugs)
    return slugs


@dataclass
class FleetCheck:
    """What the consistency check found: problems by schema, and how far each got."""

    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    progress: Counter[int] = field(default_factory=Counter)  # ledger length -> schemas
    applied_total: int = 0

    @property
    def consistent(self) -> bool:
        return not self.problems

    def complete(self, versions: int) -> int:
        return self.progress[versions]

    def describe(self) -> str:
        lines = [f"{schema}: {'; '.join(p)}" for schema, p in sorted(self.problems.items())]
        return "\n".join(lines[:20])


async def check_fleet(dsn: str, versions: list[str]) -> FleetCheck:
    """Read every tenant's ledger, users columns and apply-log rows; check the invariants."""
    conn = await asyncpg.connect(dsn)
    try:
        # one snapshot for every read, so runners still committing cannot tear the picture
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        schemas = [r[0] for r in await conn.fetch(
            "SELECT schema_name FROM public.tenants ORDER BY slug")]
        ledgers = await _ledgers(conn, schemas)
        users = await conn.fetch(
            "SELECT n.nspname AS schema, array_agg(a.attname::text) AS columns "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relname = 'users' AND n.nspname LIKE 'tenant\\_%' GROUP BY n.nspname")
        logged = await conn.fetch(
            "SELECT schema_name, version, count(*) AS n FROM public.apply_log GROUP BY 1, 2")
        wrong = set(await digest.stale(conn))
        await conn.execute("COMMIT")
    finally:
        await conn.close()
    columns = {r["schema"]: set(r["columns"]) for r in users}
    log: dict[str, Counter[str]] = defaultdict(Counter)
    for row in logged:
        log[row["schema_name"]][row["version"]] = row["n"]
    check = FleetCheck()
    for schema in schemas:
        _check_schema(check, schema, ledgers.get(schema, []), columns.get(schema), log[schema],
                      versions, schema in wrong)
    return check


async def _ledgers(conn: asyncpg.Connection, schemas: list[str]) -> dict[str, list[str]]:
    with_ledger = [r[0] for r in await conn.fetch(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'schema_migrations' AND n.nspname = ANY($1::text[])", schemas)]
    if not with_ledger:
        return {}
    query = "\nUNION ALL\n".join(
        f"SELECT {i} AS i, version::text FROM {quote_ident(s)}.schema_migrations"
        for i, s in enumerate(with_ledger))
    result: dict[str, list[str]] = {s: [] for s in with_ledger}
    for row in await conn.fetch(query):
        result[with_ledger[row[0]]].append(row[1])
    return {s: sorted(v) for s, v in result.items()}


def _check_schema(check: FleetCheck, schema: str, ledger: list[str], columns: set[str] | None,
                  log: Counter[str], versions: list[str], wrong_digest: bool) -> None:
    bad = check.problems[schema]
    if wrong_digest:
        bad.append("its digest row disagrees with its ledger")
    if ledger != versions[:len(ledger)]:
        bad.append(f"ledger {ledger} is not a prefix of {versions}")
    if (columns is not None) != (BASE_TENANT in ledger):
        bad.append(f"users table exists={columns is not None} but ledger={ledger}")
    for version in versions[1:]:
        column = "step_" + version.split("_step_", 1)[1]
        recorded = version in ledger
        if columns is not None and (column in columns) != recorded:
            bad.append(f"column {column} exists={column in columns}, recorded={recorded}")
        if log[version] != (1 if recorded else 0):
            bad.append(f"{version} logged {log[version]} times, recorded={recorded}")
    if not bad:
        del check.problems[schema]
    check.progress[len(ledger)] += 1
    check.applied_total += len(ledger)


def cli(*args: str, dsn: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m archify_core ARGS` and capture its output (never raises on exit code)."""
    command = [PYTHON, "-m", "archify_core"]
    if dsn is not None:
        command += ["--dsn", dsn]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=clean_env())


def clean_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("ARCHIFY_DSN", "DATABASE_URL")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, a one-line `archify: error:` message naming the problem, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert result.stderr.startswith("archify: error:"), output
    for needle in needles:
        assert needle in output, (needle, output)
