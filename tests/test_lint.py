"""archify lint: each rule's bad form found and its good form not, silencing, config,
plugin rules, the fleet's stakes, the CLI, and the warnings before a rollout.

Linting files is pure (no database); the good forms are also applied to a real fleet,
so that the safe way a rule suggests is SQL PostgreSQL takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from archify_core import Engine, hookimpl
from archify_core.errors import ConfigurationError
from archify_core.events import Event, MigrationApplied, Notice
from archify_core.lint import LintConfig, LintReport, Rule, Severity, lint_migrations
from archify_core.lint.fleet import lint, project_config
from archify_core.loader import load_migrations
from archify_core.plugins import make_plugin_manager
from tests.fleet import column_exists, execute, migrated_fleet
from tests.plugin_fixtures import lint_rule
from tests.test_cli import archify

VERSION = "900_change"
HEADER = ('"""\nA change\n\n# MIGRATION_SCOPE: {scope}\n# MIGRATION_VERSION: {version}\n'
          '# MIGRATION_DESCRIPTION: a change\n{transaction}"""\n')


def write(folder: Path, sql: str, *, version: str = VERSION, scope: str = "tenant",
          downgrade: str | None = "SELECT 1", transactional: bool = True,
          extra: str = "") -> Path:
    transaction = "" if transactional else "# MIGRATION_TRANSACTION: false\n"
    down = f"DOWNGRADE_SQL = {downgrade!r}\n" if downgrade else ""
    path = folder / f"{version}.py"
    path.write_text(HEADER.format(scope=scope, version=version, transaction=transaction)
                    + extra + f"\nUPGRADE_SQL = {sql!r}\n{down}")
    return path


def findings(folder: Path, config: LintConfig | None = None, version: str = VERSION,
             standing: bool = True) -> list:
    report = lint_migrations(load_migrations(folder), config)
    chosen = report.standing if standing else report.findings
    return [f for f in chosen if f.version == version]


def rules_of(folder: Path, **kwargs: object) -> list[str]:
    return [f.rule for f in findings(folder, **kwargs)]  # type: ignore[arg-type]


# (rule, bad SQL, good SQL, good runs outside a transaction)
CASES = [
    ("index-not-concurrent", "CREATE INDEX idx_email ON users (full_name);",
     "CREATE INDEX CONCURRENTLY idx_email ON users (full_name);", False),
    ("index-not-concurrent", "CREATE INDEX idx_email ON users (full_name);",
     "CREATE TABLE notes (id int, body text);\nCREATE INDEX idx_body ON notes (body);", True),
    ("concurrently-in-transaction",
     "CREATE INDEX CONCURRENTLY idx_email ON users (full_name);",
     "CREATE INDEX CONCURRENTLY idx_email ON users (full_name);", False),
    ("column-type-change", "ALTER TABLE users ALTER COLUMN full_name TYPE text;",
     "ALTER TABLE users ADD COLUMN full_name_text text;", True),
    ("volatile-default", "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
     "ALTER TABLE users ADD COLUMN seen_at timestamptz DEFAULT now();", True),
    ("set-not-null", "ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;",
     "ALTER TABLE users ADD CONSTRAINT full_name_nn CHECK (full_name IS NOT NULL) NOT VALID;",
     True),
    ("constraint-not-valid",
     "ALTER TABLE analyses ADD CONSTRAINT analyses_repo FOREIGN KEY (repository_id) "
     "REFERENCES repositories (id);",
     "ALTER TABLE analyses ADD CONSTRAINT analyses_repo FOREIGN KEY (repository_id) "
     "REFERENCES repositories (id) NOT VALID;", True),
    ("constraint-not-valid", "ALTER TABLE users ADD CONSTRAINT id_positive CHECK (id > 0);",
     "ALTER TABLE users ADD CONSTRAINT id_positive CHECK (id > 0) NOT VALID;", True),
    ("rename", "ALTER TABLE users RENAME COLUMN full_name TO name;",
     "ALTER TABLE users ADD COLUMN name varchar(255);", True),
    ("rename", "ALTER TABLE analyses RENAME TO reports;",
     "CREATE VIEW reports AS SELECT * FROM analyses;", True),
    ("drop", "ALTER TABLE users DROP COLUMN full_name;",
     "ALTER TABLE users ADD COLUMN nickname text;", True),
    ("drop", "DROP TABLE analyses;",
     "CREATE TABLE scratch (a int);\nDROP TABLE scratch;", True),
    ("names-schema", "CREATE TABLE public.notes (id int);", "CREATE TABLE notes (id int);",
     True),
    ("names-schema", "ALTER TABLE tenant_acme.users ADD COLUMN note text;",
     "ALTER TABLE users ADD COLUMN note text;", True),
    ("names-schema", "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
     "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';", True),
    ("names-schema", "ALTER TABLE users ADD COLUMN n public.citext;",
     "ALTER TABLE users ADD COLUMN n pg_catalog.text;", True),
    ("names-schema", "DROP INDEX public.idx_users_avatar;",
     "DROP INDEX idx_users_avatar;", True),
    ("search-path", "SET search_path TO public;\nCREATE TABLE notes (id int);",
     "CREATE TABLE notes (id int);", True),
    ("search-path", "SELECT set_config('search_path', 'public', true);",
     "SELECT set_config('application_name', 'x', true);", True),
]


@pytest.mark.parametrize(("rule", "bad", "good", "transactional"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_finds_the_bad_form_and_not_the_good(
        migrations_dir: Path, rule: str, bad: str, good: str, transactional: bool) -> None:
    write(migrations_dir, bad)
    assert rule in rules_of(migrations_dir)
    write(migrations_dir, good, transactional=transactional)
    assert rules_of(migrations_dir) == []


GOOD_FORMS = {good: transactional for _, _, good, transactional in CASES
              if "tenant_acme" not in good}


@pytest.mark.parametrize(("good", "transactional"), GOOD_FORMS.items(),
                         ids=[f"good-{i}" for i in range(len(GOOD_FORMS))])
def test_the_good_form_applies_to_a_real_fleet(dsn: str, migrations_dir: Path, good: str,
                                               transactional: bool) -> None:
    anyio.run(migrated_fleet, dsn, migrations_dir, ["acme"])
    write(migrations_dir, good, transactional=transactional)

    async def main() -> None:
        async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
            report = await engine.migrate("tenants")
            assert report.ok, report.to_dict()

    anyio.run(main)


def test_no_downgrade_is_a_warning_and_a_downgrade_clears_it(migrations_dir: Path) -> None:
    write(migrations_dir, "ALTER TABLE users ADD COLUMN note text;", downgrade=None)
    [finding] = findings(migrations_dir)
    assert (finding.rule, finding.severity.value, finding.line) == ("no-downgrade",
                                                                    "warning", 1)
    write(migrations_dir, "ALTER TABLE users ADD COLUMN note text;",
          downgrade="ALTER TABLE users DROP COLUMN note;")
    assert findings(migrations_dir) == []


def test_sql_that_does_not_parse_names_the_files_line(migrations_dir: Path) -> None:
    path = write(migrations_dir, "\nALTER TABLE users ADD COLUMN note text;\n"
                                 "CREATE TABL notes (id int);\n")
    [finding] = findings(migrations_dir)
    assert finding.rule == "syntax-error" and "TABL" in finding.message
    line = path.read_text().splitlines()[finding.line - 1]
    assert "UPGRADE_SQL" in line  # a one-line repr: the literal's line
    write(migrations_dir, "ALTER TABLE users ADD COLUMN note text;\nCREATE TABLE n (id int);")
    assert findings(migrations_dir) == []


def test_lines_point_into_a_triple_quoted_literal(migrations_dir: Path) -> None:
    path = migrations_dir / f"{VERSION}.py"
    path.write_text(HEADER.format(scope="tenant", version=VERSION, transaction="") +
                    'UPGRADE_SQL = """\n-- a comment\nCREATE TABLE notes (id int);\n\n'
                    'CREATE INDEX idx_name ON users (full_name);\n"""\n'
                    'DOWNGRADE_SQL = "DROP TABLE notes;"\n')
    [finding] = findings(migrations_dir)
    assert path.read_text().splitlines()[finding.line - 1].startswith("CREATE INDEX idx_name")


def test_python_migrations_lint_their_literal_sql_and_note_the_rest(
        migrations_dir: Path) -> None:
    path = migrations_dir / f"{VERSION}.py"
    path.write_text(HEADER.format(scope="tenant", version=VERSION, transaction="") +
                    "\nasync def upgrade(conn):\n"
                    "    await conn.execute('CREATE INDEX idx_name ON users (full_name)')\n"
                    "    table = 'users'\n"
                    "    await conn.execute(f'ANALYZE {table}')\n\n"
                    "async def downgrade(conn):\n"
                    "    await conn.execute('DROP INDEX idx_name')\n")
    report = lint_migrations(load_migrations(migrations_dir))
    [finding] = [f for f in report.standing if f.version == VERSION]
    assert finding.rule == "index-not-concurrent"
    assert "CREATE INDEX" in path.read_text().splitlines()[finding.line - 1]
    assert report.notes == [f"{path}:12: SQL built at run time is not linted"]


# -- silencing ------------------------------------------------------------------------

def test_a_comment_with_a_reason_silences_its_statement(migrations_dir: Path) -> None:
    write(migrations_dir, "-- archify: allow index-not-concurrent because users is tiny\n"
                          "CREATE INDEX idx_name ON users (full_name);\n"
                          "CREATE INDEX idx_created ON users (created_at);")
    [standing] = findings(migrations_dir)
    assert "users blocks" in standing.message and standing.rule == "index-not-concurrent"
    everything = findings(migrations_dir, standing=False)
    assert [f.silenced for f in everything] == ["users is tiny", None]


def test_a_silence_without_a_reason_silences_nothing_and_is_a_finding(
        migrations_dir: Path) -> None:
    write(migrations_dir, "-- archify: allow index-not-concurrent\n"
                          "CREATE INDEX idx_name ON users (full_name);")
    assert sorted(rules_of(migrations_dir)) == ["index-not-concurrent",
                                                "silence-without-reason"]


def test_a_python_comment_silences_the_whole_file(migrations_dir: Path) -> None:
    write(migrations_dir, "ALTER TABLE users ADD COLUMN note text;", downgrade=None,
          extra="# archify: allow no-downgrade because it is never reverted\n")
    assert rules_of(migrations_dir) == []


def test_the_project_config_allows_and_reweighs_rules(tmp_path: Path,
                                                      migrations_dir: Path) -> None:
    write(migrations_dir, "ALTER TABLE users RENAME COLUMN full_name TO name;\n"
                          "CREATE INDEX idx_name ON users (name);", downgrade=None)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.archify.lint]\nallow = ["rename"]\n'
        'severity = {index-not-concurrent = "warning", no-downgrade = "off"}\n')
    config = project_config(load_migrations(migrations_dir))
    [index] = findings(migrations_dir, config)
    assert (index.rule, index.severity.value) == ("index-not-concurrent", "warning")
    everything = findings(migrations_dir, config, standing=False)
    assert [f.silenced for f in everything if f.rule == "rename"] == [
        f"allowed in {tmp_path / 'pyproject.toml'}"]
    (tmp_path / "archify.toml").write_text('[lint]\nallow = ["no-such-rule"]\n')
    with pytest.raises(ConfigurationError, match="unknown lint rule 'no-such-rule'"):
        findings(migrations_dir, project_config(load_migrations(migrations_dir)))


# -- plugins ----------------------------------------------------------------------------

def test_a_plugin_adds_a_rule_through_the_hook(migrations_dir: Path) -> None:
    write(migrations_dir, "TRUNCATE users;")
    pm = make_plugin_manager([lint_rule], load_entry_points=False)

    async def main() -> LintReport:
        return await lint(load_migrations(migrations_dir), pm)

    report = anyio.run(main)
    assert [f.rule for f in report.standing if f.version == VERSION] == ["no-truncate"]
    write(migrations_dir, "-- archify: allow no-truncate because it is a scratch table\n"
                          "TRUNCATE users;")
    assert [f.rule for f in anyio.run(main).standing if f.version == VERSION] == []


# -- the fleet --------------------------------------------------------------------------

def test_stakes_weigh_a_finding_over_every_tenant(dsn: str, migrations_dir: Path) -> None:
    anyio.run(migrated_fleet, dsn, migrations_dir, ["acme", "corp", "tiny"])
    anyio.run(execute, dsn,
              "INSERT INTO tenant_acme.users (email, full_name) SELECT 'u' || g || '@x', "
              "repeat('x', 200) FROM generate_series(1, 20000) g",
              "INSERT INTO tenant_corp.users (email) SELECT 'u' || g || '@x' "
              "FROM generate_series(1, 50) g",
              "ANALYZE tenant_acme.users", "ANALYZE tenant_corp.users")
    write(migrations_dir, "ALTER TABLE users ALTER COLUMN full_name TYPE text;")

    async def main() -> LintReport:
        async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
            return await engine.lint([VERSION])

    [finding] = anyio.run(main).standing
    assert finding.stakes is not None
    assert finding.stakes.startswith("rewrites users in 3 tenants, ")
    assert "(~20,050 rows), the largest" in finding.stakes
    assert finding.stakes.endswith(" in tenant_acme")


def test_stakes_without_a_registry_yet(dsn: str, migrations_dir: Path) -> None:
    write(migrations_dir, "ALTER TABLE users ALTER COLUMN full_name TYPE text;")

    async def main() -> LintReport:
        async with Engine(dsn, migrations_dir, load_entry_points=False) as engine:
            return await engine.lint([VERSION])

    [finding] = anyio.run(main).standing
    assert finding.stakes == "users is in no tenant yet"


def test_cli_lint_with_a_dsn_says_the_stakes(dsn: str, migrations_dir: Path) -> None:
    anyio.run(migrated_fleet, dsn, migrations_dir, ["acme", "corp"])
    write(migrations_dir, "ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;")
    result = archify("lint", "--json", dsn=dsn, migrations=migrations_dir)
    assert result.returncode == 1, result.stderr
    [finding] = json.loads(result.stdout)
    assert finding["stakes"].startswith("scans users in 2 tenants, ")


# -- the CLI --------------------------------------------------------------------------

def test_cli_exit_codes_and_json(migrations_dir: Path, tmp_path: Path) -> None:
    clean = archify("lint", migrations=migrations_dir)
    assert clean.returncode == 0, clean.stderr
    assert "0 errors, 0 warnings" in clean.stdout

    write(migrations_dir, "ALTER TABLE users ADD COLUMN note text;", downgrade=None)
    warning = archify("lint", migrations=migrations_dir)
    assert warning.returncode == 0 and "warning no-downgrade" in warning.stdout

    path = write(migrations_dir, "CREATE INDEX idx_name ON users (full_name);")
    error = archify("lint", "--json", migrations=migrations_dir)
    assert error.returncode == 1
    [finding] = json.loads(error.stdout)
    assert {k: finding[k] for k in ("rule", "severity")} == {
        "rule": "index-not-concurrent", "severity": "error"}
    assert "CREATE INDEX" in path.read_text().splitlines()[finding["line"] - 1]
    assert finding["file"].endswith(f"{VERSION}.py") and finding["message"]

    shown = archify("lint", "--all", "--json", migrations=migrations_dir)
    assert {f["rule"] for f in json.loads(shown.stdout)} == {"index-not-concurrent"}

    plugin = archify("--plugin", "tests.plugin_fixtures.lint_rule", "lint",
                     migrations=migrations_dir)
    assert plugin.returncode == 1

    (migrations_dir.parent / "archify.toml").write_text('[lint]\nallow = "rename"\n')
    bad = archify("lint", migrations=migrations_dir)
    assert bad.returncode == 2 and "allow must be a list" in bad.stderr
    missing = archify("lint", migrations=tmp_path / "nowhere")
    assert missing.returncode == 2


def test_cli_plugin_rule_is_reported(migrations_dir: Path) -> None:
    write(migrations_dir, "TRUNCATE users;")
    result = archify("--plugin", "tests.plugin_fixtures.lint_rule", "lint", "--json",
                     migrations=migrations_dir)
    assert result.returncode == 1, result.stderr
    assert [f["rule"] for f in json.loads(result.stdout)] == ["no-truncate"]


# -- before a rollout --------------------------------------------------------------------

def test_a_rollout_warns_before_a_pending_migration_runs(dsn: str,
                                                         migrations_dir: Path) -> None:
    anyio.run(migrated_fleet, dsn, migrations_dir, ["acme", "corp"])
    write(migrations_dir, "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();")
    events: list[Event] = []

    async def main() -> None:
        async with Engine(dsn, migrations_dir, load_entry_points=False,
                          on_event=events.append) as engine:
            assert (await engine.migrate("tenants")).ok

    anyio.run(main)
    kinds = [(type(e).__name__, getattr(e, "message", "")) for e in events
             if isinstance(e, Notice | MigrationApplied)]
    assert kinds[0][0] == "Notice" and "volatile-default" in kinds[0][1]
    assert "rewrites users in 2 tenants" in kinds[0][1]
    assert [k for k, _ in kinds].count("Notice") == 1  # once, not per tenant
    assert anyio.run(column_exists, dsn, "tenant_corp", "users", "token")


def test_cli_migrate_and_validate_warn_without_stopping(dsn: str,
                                                        migrations_dir: Path) -> None:
    anyio.run(migrated_fleet, dsn, migrations_dir, ["acme"])
    write(migrations_dir, "ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;")
    validate = archify("validate", dsn=dsn, migrations=migrations_dir)
    assert validate.returncode == 0, validate.stderr
    assert "ℹ lint:" in validate.stderr and "set-not-null" in validate.stderr
    rollout = archify("all", dsn=dsn, migrations=migrations_dir)
    assert rollout.returncode == 0, rollout.stderr
    assert "ℹ lint:" in rollout.stderr and "set-not-null" in rollout.stderr
    again = archify("all", dsn=dsn, migrations=migrations_dir)
    assert "lint:" not in again.stderr  # nothing pending: no warning, no pglast


class _BrokenRule:
    @staticmethod
    def _check(ctx: object) -> list:
        raise RuntimeError("rule bug")

    @hookimpl
    def archify_lint_rules(self) -> list[Rule]:
        return [Rule("broken", Severity.WARNING, "-", self._check)]


def test_a_failing_lint_is_a_notice_and_the_rollout_goes_on(dsn: str,
                                                            migrations_dir: Path) -> None:
    anyio.run(migrated_fleet, dsn, migrations_dir, ["acme"])
    write(migrations_dir, "ALTER TABLE users ADD COLUMN note text;")
    events: list[Event] = []

    async def main() -> None:
        async with Engine(dsn, migrations_dir, load_entry_points=False,
                          plugins=[_BrokenRule()], on_event=events.append) as engine:
            assert (await engine.migrate("tenants")).ok

    anyio.run(main)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(f"could not lint {VERSION}: RuntimeError: rule bug" in n for n in notices)
    assert anyio.run(column_exists, dsn, "tenant_acme", "users", "note")


def test_validate_offline_warns_about_every_files_findings(migrations_dir: Path) -> None:
    write(migrations_dir, "CREATE INDEX idx_users_name ON users(full_name);")
    validate = archify("validate", "--offline", migrations=migrations_dir)
    assert validate.returncode == 0, validate.stderr
    warnings = [line for line in validate.stderr.splitlines() if "ℹ lint:" in line]
    assert any("index-not-concurrent" in line and f"{VERSION}.py" in line
               for line in warnings), validate.stderr
    assert "are valid" in validate.stdout
    write(migrations_dir, "CREATE INDEX CONCURRENTLY idx_users_name ON users(full_name);",
          transactional=False)
    fixed = archify("validate", "--offline", migrations=migrations_dir)
    assert fixed.returncode == 0, fixed.stderr
    assert "index-not-concurrent" not in fixed.stderr
