"""The three ways of doing the same work: archify, the sequential loop, the floor.

Every function returns seconds of wall time for the work, connections included.
Archify runs in a child process (see archify_runner, cli_rss) that reports its
own peak RSS, so the parent's memory never counts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import asyncpg

from archify_core import digest
from archify_core.migration import Migration, MigrationSet, Scope
from archify_core.sql import ledger_name, quote_ident, quote_literal

from .peak_rss import ENV

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    seconds: float
    rss_mb: float | None = None
    samples: list[float] = field(default_factory=list)


async def run_child(argv: list[str]) -> tuple[str, float, float]:
    """Run a child to completion, without blocking the event loop: (stdout, wall seconds,
    the child's own peak RSS in MB, which it writes at exit, see peak_rss)."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        env = {**os.environ, ENV: str(rss_file)}
        started = time.perf_counter()
        proc = await anyio.run_process(argv, cwd=ROOT, env=env, check=False)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:6])} exited with {proc.returncode}: "
                               f"{proc.stderr.decode()[-2000:]}")
        rss = float(rss_file.read_text()) if rss_file.exists() else float("nan")
        return proc.stdout.decode(), seconds, rss


async def archify_api(dsn: str, migrations: Path, work: str, *,
                      concurrency: int | None = None, count: int = 0,
                      prefix: str = "bench_new_") -> Measured:
    """`concurrency` None: the engine's own (sized to the server)."""
    out, _, rss = await run_child([
        sys.executable, "-m", "benchmarks.archify_runner", "--dsn", dsn,
        "--migrations", str(migrations), "--work", work,
        *(["--concurrency", str(concurrency)] if concurrency is not None else []),
        "--count", str(count), "--prefix", prefix,
    ])
    result = json.loads(out.strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError(f"archify {work} reported a failure")
    return Measured(result["seconds"], rss, result["samples"])


async def archify_cli(dsn: str | None, migrations: Path | None, command: list[str]) -> Measured:
    """`archify --dsn DSN --migrations DIR <command>` end to end, interpreter start included
    (without a DSN and folder: `archify <command>`, e.g. --help)."""
    where = ["--dsn", dsn, "--migrations", str(migrations)] if dsn and migrations else []
    _, seconds, rss = await run_child([sys.executable, "-m", "benchmarks.cli_rss", *where,
                                        *command])
    return Measured(seconds, rss)


async def _baseline_connection(dsn: str) -> asyncpg.Connection:
    """A connection for the baselines. The fleets are as archify leaves them, their ledgers
    tracked by the digest (digest.py); the setting tells the ledgers' trigger to skip the
    baselines' rows, so they pay nothing for a digest they do not keep (the fleet reset
    recomputes it afterwards) and every digest cost shows in archify's times."""
    return await asyncpg.connect(dsn, server_settings={digest.WRITER_SETTING: "on"})


# -- sequential: what the guide's original manager does ------------------------------------

async def sequential(dsn: str, migrations: MigrationSet) -> Measured:
    """One connection; per tenant read its ledger, then each pending migration in its own
    transaction with its ledger row."""
    started = time.perf_counter()
    tenant = migrations.for_kind(Scope.TENANT)
    conn = await _baseline_connection(dsn)
    try:
        schemas = [r[0] for r in await conn.fetch(
            "SELECT schema_name FROM public.tenants ORDER BY slug")]
        for schema in schemas:
            done = {r[0] for r in await conn.fetch(
                f"SELECT version FROM {ledger_name(schema)}")}
            for m in tenant:
                if m.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
                    await conn.execute(m.upgrade_sql)
                    await conn.execute(
                        f"INSERT INTO {ledger_name(schema)} (version, checksum) VALUES ($1, $2)",
                        m.version, m.checksum)
    finally:
        await conn.close()
    return Measured(time.perf_counter() - started)


# -- floor: the least a client can ask of the server -------------------------------------------

def floor_script(schema: str, pending: list[Migration]) -> str:
    """All of one schema's pending transactions as one SQL string: one round trip."""
    parts = []
    for m in pending:
        parts.append(
            f"BEGIN;\nSET LOCAL search_path TO {quote_ident(schema)};\n"
            f"{m.upgrade_sql.rstrip()}\n;\n"
            f"INSERT INTO {ledger_name(schema)} (version, checksum) VALUES "
            f"({quote_literal(m.version)}, {quote_literal(m.checksum)});\nCOMMIT;\n")
    return "".join(parts)


async def floor(dsn: str, schemas: list[str], pending: list[Migration],
                connections: int) -> Measured:
    """Scripts built before the clock starts; no ledger reads; `connections` in parallel."""
    scripts = iter([floor_script(s, pending) for s in schemas])
    started = time.perf_counter()

    async def worker() -> None:
        conn = await _baseline_connection(dsn)
        try:
            for script in scripts:
                await conn.execute(script)
        finally:
            await conn.close()

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(worker)
    return Measured(time.perf_counter() - started)


# -- creating one tenant by hand ------------------------------------------------------------------

async def create_by_hand(dsn: str, script_for: list[tuple[str, str]]) -> Measured:
    """Each (slug, script) in one round trip on an open connection; per-tenant samples."""
    conn = await asyncpg.connect(dsn)
    samples = []
    try:
        for _, script in script_for:
            t0 = time.perf_counter()
            await conn.execute(script)
            samples.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    return Measured(sum(samples), samples=samples)
