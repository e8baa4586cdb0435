"""The CLI end to end: real processes against the suite's PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import (
    add_migration,
    column_exists,
    fetchval,
    ledger_versions,
    register_tenants,
)
from tests.plugin_fixtures.hook_order import HookOrder


def archify(*args: str, dsn: str | None = None, migrations: Path | None = None,
            cwd: Path | None = None, **env_vars: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "archify_core"]
    if dsn:
        command += ["--dsn", dsn]
    if migrations:
        command += ["--migrations", str(migrations)]
    env = {k: v for k, v in os.environ.items() if k not in ("ARCHIFY_DSN", "DATABASE_URL")}
    env.update(env_vars)
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_guide_workflow(dsn: str, migrations_dir: Path) -> None:
    status = archify("status", dsn=dsn, migrations=migrations_dir)
    assert status.returncode == 0, status.stderr
    assert "MIGRATION STATUS" in status.stdout and "⏳ 001_create_public_tables" in status.stdout

    assert archify("public", dsn=dsn, migrations=migrations_dir).returncode == 0
    for slug in ("acme", "corp"):
        created = archify("create-tenant", slug, "--no-migrate", dsn=dsn, migrations=migrations_dir)
        assert created.returncode == 0, created.stderr

    plan = archify("tenants", "--dry-run", dsn=dsn, migrations=migrations_dir)
    assert plan.returncode == 0 and "→ 003_add_user_avatar" in plan.stdout
    assert not asyncio_run(column_exists(dsn, "tenant_acme", "users", "avatar_url"))

    one = archify("tenant", "acme", dsn=dsn, migrations=migrations_dir)
    assert one.returncode == 0, one.stderr
    assert "tenant_acme:" in one.stdout and "✓ 003_add_user_avatar" in one.stdout
    assert asyncio_run(ledger_versions(dsn, "tenant_corp")) == []

    rollout = archify("all", dsn=dsn, migrations=migrations_dir)
    assert rollout.returncode == 0, rollout.stderr
    assert "tenant_corp:" in rollout.stdout and "✅" in rollout.stdout

    status = json.loads(archify("status", "--json", dsn=dsn, migrations=migrations_dir).stdout)
    assert status["public"]["pending"] == []
    assert [(t["slug"], t["schema"], t["pending"]) for t in status["tenants"]] == [
        ("acme", "tenant_acme", []), ("corp", "tenant_corp", [])]
    assert status["tenants"][0]["applied"] == [
        "002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]


@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_batch_size_reaches_the_engine(
    dsn: str, migrations_dir: Path, tmp_path: Path, batch_size: str
) -> None:
    """One worker, six tenants pending: with --batch-size 8 schemas start while another's
    migrations are under way (they share round trips), with 1 never."""
    assert archify("public", dsn=dsn, migrations=migrations_dir).returncode == 0
    asyncio_run(register_tenants(dsn, [f"t{i}" for i in range(6)]))
    log = tmp_path / "hooks.log"
    result = archify("--concurrency", "1", "--batch-size", batch_size, "--plugin",
                     "tests.plugin_fixtures.hook_order:plugin", "tenants", dsn=dsn,
                     migrations=migrations_dir, ARCHIFY_TEST_HOOK_LOG=str(log))
    assert result.returncode == 0, result.stderr
    order = HookOrder.read(log)
    assert order.paired() and order.batched() == (batch_size == "8")
    for i in range(6):
        assert asyncio_run(ledger_versions(dsn, f"tenant_t{i}")) == [
            "002_create_tenant_tables", "003_add_user_avatar", "005_add_audit_logs"]


def test_a_failing_schema_exits_1_and_names_it(dsn: str, migrations_dir: Path) -> None:
    assert archify("public", dsn=dsn, migrations=migrations_dir).returncode == 0
    for slug in ("fine", "broken"):
        archify("create-tenant", slug, "--no-migrate", dsn=dsn, migrations=migrations_dir)
    asyncio_run(fetchval(dsn, "CREATE TABLE tenant_broken.users (id int)"))  # clashes with 002
    add_migration(migrations_dir, "006_noop", "tenant", "SELECT 1;")
    result = archify("tenants", "--json", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    failed = [s for s in report["schemas"] if s["outcome"] == "failed"]
    assert [(s["slug"], s["failure"]["version"]) for s in failed] == [
        ("broken", "002_create_tenant_tables")]
    assert asyncio_run(ledger_versions(dsn, "tenant_fine"))[-1] == "006_noop"

    human = archify("tenants", dsn=dsn, migrations=migrations_dir)
    assert human.returncode == 1
    assert "❌ 1 schema failed: tenant_broken" in human.stdout
    assert "✗ 002_create_tenant_tables" in human.stdout


def test_bad_input_exits_2_without_a_traceback(dsn: str, migrations_dir: Path) -> None:
    (migrations_dir / "006_broken.py").write_text('"""\n# MIGRATION_SCOPE: sideways\n"""\n')
    result = archify("all", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 2
    assert "006_broken.py: unknown MIGRATION_SCOPE 'sideways'" in result.stderr
    assert "Traceback" not in result.stderr
    assert asyncio_run(fetchval(dsn, "SELECT to_regclass('public.schema_migrations')")) is None
    (migrations_dir / "006_broken.py").unlink()

    bad_slug = archify("create-tenant", "Robert'); DROP TABLE tenants;--", dsn=dsn,
                       migrations=migrations_dir)
    assert bad_slug.returncode == 2 and "invalid tenant slug" in bad_slug.stderr

    no_registry = archify("tenants", dsn=dsn, migrations=migrations_dir)
    assert no_registry.returncode == 2 and "archify public" in no_registry.stderr

    bad_dsn = archify("status", dsn="mysql://nope", migrations=migrations_dir)
    assert bad_dsn.returncode == 2 and "must start with postgresql://" in bad_dsn.stderr
    unreachable = archify("status", dsn="postgresql://u:secret@127.0.0.1:1/db",
                          migrations=migrations_dir)
    assert unreachable.returncode == 2 and "cannot connect" in unreachable.stderr
    assert "secret" not in unreachable.stderr and "Traceback" not in unreachable.stderr
    # bad input is named before any connection is tried, whatever the DSN
    for command in (["tenant", "Bad-Slug"], ["rollback", "--steps", "1", "--tenant", "Bad-Slug"],
                    ["create-tenant", "Bad-Slug"]):
        early = archify(*command, dsn="postgresql://u@127.0.0.1:1/db", migrations=migrations_dir)
        assert early.returncode == 2 and "invalid tenant slug 'Bad-Slug'" in early.stderr, early
        assert "cannot connect" not in early.stderr
    no_version = archify("rollback", "--to", "999_nope", "--all-tenants",
                         dsn="postgresql://u@127.0.0.1:1/db", migrations=migrations_dir)
    assert no_version.returncode == 2 and "--to 999_nope: no migration file" in no_version.stderr
    # a public migration as the tenants' --to would revert every tenant migration
    wrong_scope = archify("rollback", "--to", "001_create_public_tables", "--all-tenants",
                          dsn="postgresql://u@127.0.0.1:1/db", migrations=migrations_dir)
    assert wrong_scope.returncode == 2, wrong_scope
    assert "not applied to tenant schemas" in wrong_scope.stderr

    no_batch = archify("--batch-size", "0", "tenants", dsn=dsn, migrations=migrations_dir)
    assert no_batch.returncode == 2 and "--batch-size" in no_batch.stderr

    missing = archify("status", migrations=migrations_dir / "nope", dsn=dsn)
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    # `--dsn "$UNSET_VARIABLE"` must not fall through to DATABASE_URL and migrate it
    empty = archify("--dsn", "", "public", migrations=migrations_dir, DATABASE_URL=dsn)
    assert empty.returncode == 2 and "--dsn is empty" in empty.stderr

    for reference in (":x", "no_such_plugin_module_xyz:plugin"):
        plugin = archify("--plugin", reference, "public", dsn=dsn, migrations=migrations_dir)
        assert plugin.returncode == 2 and f"cannot load plugin {reference!r}" in plugin.stderr
        assert "Traceback" not in plugin.stderr
    assert asyncio_run(fetchval(dsn, "SELECT to_regclass('public.schema_migrations')")) is None


@pytest.fixture
def project_dir() -> Iterator[Path]:
    """A project folder the embedded server's OS user can traverse. Not under pytest's
    tmp_path: pytest keeps its base folder private (0700), resetting it at every session."""
    path = Path(tempfile.mkdtemp(prefix="archify-project-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_server_when_no_dsn_is_given(project_dir: Path, migrations_dir: Path) -> None:
    tmp_path = project_dir
    first = archify("all", migrations=migrations_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / ".archify" / "pg18" / "PG_VERSION").exists()
    second = archify("status", "--json", migrations=migrations_dir, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["public"]["pending"] == []


def asyncio_run(coro: object) -> object:
    import anyio

    async def run() -> object:
        return await coro  # type: ignore[misc]

    return anyio.run(run)
