"""The results as a Markdown table, the targets checked, and docs/performance.md."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from archify_core.engine import AUTO_CONCURRENCY

from . import filesystem, server
from .scenarios import WIDE_FLOOR, Result

DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def _s(value: float) -> str:
    if value != value:  # nan
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _x(value: float) -> str:
    return "—" if value != value else f"{value:.2f}×"


def results_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| scenario | N | archify (s) | sequential (s) | floor (s) | archify / floor "
        "| sequential / archify | CLI end to end (s) | archify peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.scenario in ("create-tenant", "start-up", "drift"):
            continue
        a, seq, fl = r.median("archify"), r.median("sequential"), r.floor()
        rss = r.rss_mb.get("archify", float("nan"))
        lines.append(
            f"| {r.scenario} | {r.n:,} | {_s(a)} | {_s(seq)} | {_s(fl)} | {_x(a / fl)} "
            f"| {_x(seq / a)} | {_s(r.median('cli'))} | {rss:.0f} |")
    return lines


def deploy_table(results: Sequence[Result]) -> list[str]:
    """What users run: `archify … all` end to end, against the floor and the sequential
    loop of the same run."""
    rows = [r for r in results if r.scenario == "deploy" and "cli" in r.times]
    if not rows:
        return []
    lines = ["| deploy, CLI end to end | N | `archify … all` (s) | floor (s) | CLI / floor "
             "| sequential (s) | sequential / CLI | CLI peak RSS (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cli, fl, seq = r.median("cli"), r.floor(), r.median("sequential")
        rss = r.rss_mb.get("cli", float("nan"))
        lines.append(f"| deploy | {r.n:,} | {_s(cli)} | {_s(fl)} | {_x(cli / fl)} | {_s(seq)} "
                     f"| {_x(seq / cli)} | {rss:.0f} |")
    return lines


def drift_table(results: Sequence[Result]) -> list[str]:
    rows = [r for r in results if r.scenario == "drift"]
    if not rows:
        return []
    return ["| `archify drift --json`, end to end | N | median (s) | peak RSS (MB) |",
            "| --- | ---: | ---: | ---: |",
            *(f"| drift | {r.n:,} | {_s(r.median('cli'))} | "
              f"{r.rss_mb.get('cli', float('nan')):.0f} |" for r in rows)]


def start_up_table(results: Sequence[Result]) -> list[str]:
    r = _find(results, "start-up", 0)
    if r is None:
        return []
    return ["| front end, no database | median (s) | p95 (s) |", "| --- | ---: | ---: |",
            *(f"| `archify {flag}` | {_s(r.median(tool))} | {_s(r.p(tool, 95))} |"
              for tool, flag in (("help", "--help"), ("version", "--version")))]


def wide_floor_table(results: Sequence[Result]) -> list[str]:
    rows = [r for r in results if WIDE_FLOOR in r.times]
    if not rows:
        return []
    lines = [f"| scenario | N | archify (s) | floor, 2 or 8 connections (s) | floor, "
             f"{WIDE_FLOOR.removeprefix('floor-')} connections (s) | archify / that floor |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        a, wide = r.median("archify"), r.median(WIDE_FLOOR)
        lines.append(f"| {r.scenario} | {r.n:,} | {_s(a)} | {_s(r.floor())} | {_s(wide)} "
                     f"| {_x(a / wide)} |")
    return lines


def create_table(results: Sequence[Result]) -> list[str]:
    rows = [r for r in results if r.scenario == "create-tenant"]
    if not rows:
        return []
    lines = ["| create-tenant | N | archify p50 (ms) | archify p95 (ms) | by hand p50 (ms) "
             "| by hand p95 (ms) | p50 ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        a50, h50 = r.p("archify", 50) * 1000, r.p("by-hand", 50) * 1000
        lines.append(f"| create-tenant | {r.n:,} | {a50:.1f} | {r.p('archify', 95) * 1000:.1f} "
                     f"| {h50:.1f} | {r.p('by-hand', 95) * 1000:.1f} | {_x(a50 / h50)} |")
    return lines


def concurrency_table(results: Sequence[Result]) -> list[str]:
    rows = [r for r in results if any(t.startswith("archify-c") for t in r.times)]
    if not rows:
        return []
    tools = ["archify"] + sorted({t for r in rows for t in r.times if t.startswith("archify-c")},
                                 key=lambda t: int(t.removeprefix("archify-c")))
    label = {t: (f"default (≤ {AUTO_CONCURRENCY})" if t == "archify"
                 else t.removeprefix("archify-c")) for t in tools}
    lines = ["| scenario | N | " + " | ".join(f"c={label[t]} (s)" for t in tools) + " |",
             "| --- | ---: |" + " ---: |" * len(tools)]
    for r in rows:
        lines.append(f"| {r.scenario} | {r.n:,} | "
                     + " | ".join(_s(r.median(t)) for t in tools) + " |")
    return lines


def _find(results: Sequence[Result], scenario: str, n: int) -> Result | None:
    return next((r for r in results if r.scenario == scenario and r.n == n), None)


def targets(results: Sequence[Result], latency_ms: float) -> list[str]:
    """Each target of issue 5 that this run measured: the number and met / not met."""
    out: list[str] = []

    def check(name: str, value: float, ok: bool, shown: str) -> None:
        if value == value:
            out.append(f"| {name} | {shown} | {'met' if ok else 'NOT met'} |")

    if latency_ms:
        r = _find(results, "rollout", 1000)
        if r:
            v = r.median("archify") / r.floor()
            check(f"rollout N=1,000 at +{latency_ms:g} ms: ≤ 1.3× floor", v, v <= 1.3, _x(v))
        return out
    for n in (2000, 10000):
        r = _find(results, "deploy", n)
        if r and "cli" in r.times:
            v = r.median("cli") / r.floor()
            check(f"deploy N={n:,}, `archify … all` end to end: ≤ 1.15× floor", v, v <= 1.15,
                  _x(v))
            v = r.median("sequential") / r.median("cli")
            check(f"deploy N={n:,}, CLI: ≥ 3× faster than sequential", v, v >= 3, _x(v))
    for scenario in ("noop", "status"):
        r = _find(results, scenario, 10000)
        if r and "cli" in r.times:
            v = r.median("cli")
            check(f"{scenario} N=10,000, CLI end to end: ≤ 0.5 s", v, v <= 0.5, f"{v:.3f} s")
    r = _find(results, "drift", 10000)
    if r:
        v = r.median("cli")
        check("drift N=10,000, `archify drift` end to end: ≤ 2 s", v, v <= 2, f"{v:.3f} s")
    r = _find(results, "start-up", 0)
    if r:
        for tool in ("help", "version"):
            v = r.median(tool)
            check(f"`archify --{tool}`: ≤ 0.15 s", v, v <= 0.15, f"{v:.3f} s")
    cli_rss = {n: max((r.rss_mb.get("cli", 0) for r in results if r.n == n
                       and r.scenario == "deploy"), default=0) for n in (1000, 2000, 10000)}
    small_n = 1000 if cli_rss[1000] else 2000
    if cli_rss[small_n] and cli_rss[10000]:
        v = cli_rss[10000] / cli_rss[small_n]
        check(f"CLI peak RSS deploy N=10,000 ≤ 1.3× N={small_n:,}", v, v <= 1.3,
              f"{cli_rss[10000]:.0f} / {cli_rss[small_n]:.0f} MB = {_x(v)}")
    r = _find(results, "rollout", 10000)
    if r:
        v = r.median("archify") / r.floor()
        check("rollout N=10,000: ≤ 1.15× floor", v, v <= 1.15, _x(v))
        v = r.median("sequential") / r.median("archify")
        check("rollout N=10,000: ≥ 2× faster than sequential", v, v >= 2, _x(v))
    r = _find(results, "bootstrap", 1000)
    if r:
        v = r.median("archify") / r.floor()
        check("bootstrap N=1,000: ≤ 1.15× floor", v, v <= 1.15, _x(v))
    r = _find(results, "noop", 10000)
    if r:
        v = r.median("archify")
        check("noop N=10,000: < 0.5 s engine time", v, v < 0.5, f"{v:.3f} s")
    r = _find(results, "status", 10000)
    if r:
        v = r.median("archify")
        check("status N=10,000: < 1 s engine time", v, v < 1, f"{v:.3f} s")
        v = r.median("cli")
        check("`archify status` N=10,000 end to end: < 2 s", v, v < 2, f"{v:.3f} s")
    big, small = _find(results, "create-tenant", 10000), _find(results, "create-tenant", 1000)
    if big:
        v = big.p("archify", 50) / big.p("by-hand", 50)
        check("create-tenant N=10,000: p50 ≤ 1.5× by hand", v, v <= 1.5, _x(v))
        if small:
            v = big.p("archify", 50) / small.p("archify", 50)
            by_hand = big.p("by-hand", 50) / small.p("by-hand", 50)
            check("create-tenant p50 N=10,000 vs N=1,000: no growth (≤ 1.15×)", v, v <= 1.15,
                  f"{_x(v)} (the same DDL by hand: {_x(by_hand)})")
            v = v / by_hand
            check("create-tenant: growth beyond the by-hand DDL's own (≤ 1.15×)", v, v <= 1.15,
                  _x(v))
    rss = {n: max((r.rss_mb.get("archify", 0) for r in results if r.n == n), default=0)
           for n in (1000, 10000)}
    if rss[1000] and rss[10000]:
        v = rss[10000] / rss[1000]
        check("peak RSS N=10,000 ≤ 1.3× N=1,000", v, v <= 1.3,
              f"{rss[10000]:.0f} / {rss[1000]:.0f} MB = {_x(v)}")
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def machine(admin_dsn: str) -> str:
    cpu = _cpu()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rtt = await server.round_trip_ms(admin_dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        try:
            data = filesystem.describe(await conn.fetchval("SHOW data_directory"))
        except asyncpg.InsufficientPrivilegeError:  # --dsn with a role that may not see it
            data = "unknown"
    finally:
        await conn.close()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {version}; the server's data "
            f"folder on {data}; a `SELECT 1` round trip {rtt:.3f} ms")


def render(results: Sequence[Result], *, machine_line: str, command: str, repeats: int,
           latency_ms: float, wall_s: float, rtt: tuple[float, float] | None = None) -> str:
    link = (f"added round-trip latency {latency_ms:g} ms through benchmarks/latency_proxy.py"
            if latency_ms else "local server (unix socket)")
    if rtt:
        link += f" (`SELECT 1` round trip {rtt[0]:.2f} ms direct, {rtt[1]:.2f} ms through it)"
    parts = [f"Measured on: {machine_line}.", "",
             f"Command: `{command}` — {repeats} repeats, medians; {link}; "
             f"whole run {wall_s / 60:.1f} min.", ""]
    parts += results_table(results) + [""]
    for table in (deploy_table(results), drift_table(results), start_up_table(results),
                  wide_floor_table(results), create_table(results), concurrency_table(results)):
        if table:
            parts += table + [""]
    checks = targets(results, latency_ms)
    if checks:
        parts += ["| target | measured | |", "| --- | ---: | --- |", *checks, ""]
    return "\n".join(parts)


def write_docs(section: str, key: str) -> None:
    """Replace this run's section (keyed by `key`, e.g. "local" or "latency") in
    docs/performance.md, keeping the hand-written text around it."""
    text = DOCS.read_text() if DOCS.exists() else ""
    begin, end = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    DOCS.write_text(text)
