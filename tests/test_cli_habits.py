"""The CLI's habits, each tried as a new user types it (issue 15): options after the
command, suggestions, --version, grouped failures, --fail-fast, progress on a log,
--migrations pointing at a file, nothing printed before a configuration error,
--quiet, rollback wording, plurals, the concurrency cap."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from archify_core import _version
from archify_core.cli import options
from archify_core.engine import AUTO_CONCURRENCY, DEFAULT_BATCH_SIZE
from archify_core.migration import Scope
from archify_core.steps import ExecutionOptions
from tests.fleet import add_migration, column_exists, ledger_versions, migrated_fleet
from tests.test_cli import archify

SLUGS = [f"t{i:02d}" for i in range(25)]


def test_the_cli_repeats_the_engines_defaults_exactly() -> None:
    defaults = ExecutionOptions()
    assert options.AUTO_CONCURRENCY == AUTO_CONCURRENCY
    assert options.DEFAULT_BATCH_SIZE == DEFAULT_BATCH_SIZE
    assert defaults.lock_timeout == options.DEFAULT_LOCK_TIMEOUT
    assert defaults.retries == options.DEFAULT_RETRIES
    assert defaults.server_wait == options.DEFAULT_SERVER_WAIT
    assert tuple(s.value for s in Scope) == options.SCOPES


async def test_global_options_go_before_or_after_the_command(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    before = archify("--dsn", dsn, "--migrations", str(migrations_dir), "status")
    after = archify("status", "--dsn", dsn, "--migrations", str(migrations_dir))
    assert before.returncode == after.returncode == 0, after.stderr
    assert before.stdout == after.stdout and "tenant_acme" in after.stdout
    mixed = archify("--dsn", dsn, "all", "--concurrency", "4", "--migrations",
                    str(migrations_dir), "--quiet")
    assert mixed.returncode == 0, mixed.stderr
    assert mixed.stdout.startswith("✅ Everything is up to date (2 schemas checked")


@pytest.mark.parametrize(("typed", "meant"), [("--dsm", "--dsn"), ("--concurency", "--concurrency"),
                                              ("--jsn", "--json")])
def test_an_unknown_option_names_the_closest_real_one(typed: str, meant: str) -> None:
    result = archify("status", typed, "x")
    assert result.returncode == 2
    said = result.stderr.split("Error: ", 1)[1]
    # one suggestion, the right one
    assert said == f"No such option '{typed}'. Did you mean '{meant}'?\n", result.stderr


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = archify(flag)
    assert result.returncode == 0
    assert result.stdout == f"archify {_version.__version__}\n"


def _failing_everywhere(migrations: Path) -> None:
    add_migration(migrations, "006_broken", "tenant",
                  "DO $$ BEGIN RAISE EXCEPTION 'cannot migrate %', current_schema(); END $$;")


async def test_failures_are_grouped_by_cause(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    _failing_everywhere(migrations_dir)
    result = archify("tenants", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    # the cause is printed once for the whole fleet, with its count and first schemas
    assert out.count("cannot migrate <schema>") == 1, out
    assert "25 × 006_broken: cannot migrate <schema>" in out
    assert "tenant_t00, tenant_t01, tenant_t02" in out
    assert "❌ 25 schemas failed: tenant_t00, tenant_t01" in out
    # the log names the first few schemas' own failures only
    assert len(re.findall(r"✗ 006_broken: cannot migrate tenant_t\d\d", out)) == 3
    as_json = archify("tenants", "--json", dsn=dsn, migrations=migrations_dir)
    failed = [s for s in json.loads(as_json.stdout)["schemas"] if s["outcome"] == "failed"]
    assert sorted(s["schema"] for s in failed) == [f"tenant_{s}" for s in SLUGS]
    assert {s["failure"]["message"] for s in failed} == {
        f"cannot migrate tenant_{s} (SQLSTATE P0001)" for s in SLUGS}


async def test_fail_fast_stops_starting_schemas(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    _failing_everywhere(migrations_dir)
    result = archify("tenants", "--fail-fast", "--json", "--concurrency", "2",
                     dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["stopped_early"]
    outcomes = [s["outcome"] for s in report["schemas"]]
    assert outcomes.count("failed") <= 2  # the first failure, and at most one in flight
    assert outcomes.count("skipped") >= len(SLUGS) - 2
    clash = archify("tenants", "--fail-fast", "--max-failures", "5", dsn=dsn,
                    migrations=migrations_dir)
    assert clash.returncode == 2 and "--fail-fast" in clash.stderr


async def test_progress_lines_on_a_log_and_notices_unwrapped(
    dsn: str, migrations_dir: Path
) -> None:
    await migrated_fleet(dsn, migrations_dir, SLUGS)
    add_migration(migrations_dir, "006_slow", "tenant", "SELECT pg_sleep(0.1);")
    result = archify("tenants", "--concurrency", "2", dsn=dsn, migrations=migrations_dir,
                     ARCHIFY_PROGRESS_EVERY="0.3")
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if re.match(
        r"archify: \d+ of 25 schemas \(\d+ %\), [\d,]+ schemas/s, about \d+ s left, \d+ at a "
        r"time$", line)]
    assert progress, result.stderr
    add_migration(migrations_dir, "007_more", "tenant", "SELECT 1;")
    result = archify("tenants", "--concurrency", "500", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    # the cap is one line, in words, however long, never wrapped at 80 columns
    [cap] = [line for line in lines if "asked for" in line]
    assert re.search(r"running \d+ schemas at a time, not the 500 asked for: the server has "
                     r"\d+ free connection slots \(max_connections \d+, \d+ in use", cap), cap


def test_migrations_pointing_at_a_file(tmp_path: Path) -> None:
    file = tmp_path / "001_x.py"
    file.write_text("x")
    result = archify("status", "--migrations", str(file))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "is a file, not a folder" in result.stderr and str(file) in result.stderr


async def test_nothing_is_printed_before_a_configuration_error(
    dsn: str, migrations_dir: Path, tmp_path: Path
) -> None:
    result = archify("all", dsn=dsn, migrations=tmp_path / "nowhere")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    bad_dsn = archify("all", dsn="postgresql://nobody:hunter2@127.0.0.1:1/x",
                      migrations=migrations_dir)
    assert bad_dsn.returncode == 2 and bad_dsn.stdout == ""
    assert "hunter2" not in bad_dsn.stderr and bad_dsn.stderr.count("\n") == 1


async def test_quiet_prints_only_the_summary_line(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    add_migration(migrations_dir, "006_more", "tenant", "ALTER TABLE users ADD COLUMN more int;")
    result = archify("all", "-q", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("✅ Migration complete (2 schemas: 1 migrated, 1 up to "
                                     "date, 0 failed, 0 skipped; 1 migration applied in ")
    assert await column_exists(dsn, "tenant_acme", "users", "more")


async def test_rollback_says_reverted(dsn: str, migrations_dir: Path) -> None:
    await migrated_fleet(dsn, migrations_dir, ["acme"])
    result = archify("rollback", "--tenant", "acme", "--steps", "1", dsn=dsn,
                     migrations=migrations_dir)
    assert result.returncode == 0, result.stderr
    assert re.search(r"↩ reverted 005_add_audit_logs \(\d+ ms\)", result.stdout), result.stdout
    assert "✓ 005" not in result.stdout
    assert "1 schema: 1 rolled back" in result.stdout and "1 migration reverted" in result.stdout
    assert "005_add_audit_logs" not in await ledger_versions(dsn, "tenant_acme")
