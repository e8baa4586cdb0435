"""Property tests: the slug validator and the migration-file loader never crash, never
accept what SQL could misread, and always explain a rejection."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from archify_core import InvalidSlugError, MigrationSetError, load_migrations, validate_slug
from archify_core.errors import ConfigurationError
from archify_core.sql import quote_ident
from archify_core.tenants import schema_for

SAFE_SCHEMA = re.compile(r"tenant_[a-z][a-z0-9_]*")


@settings(max_examples=600, deadline=None, database=None)
@given(st.one_of(
    st.text(),
    st.text(alphabet="abcxyz_019AZ;'\" -$\\\x00é", max_size=70),
    st.from_regex(r"[a-z][a-z0-9_]{0,70}", fullmatch=True),
))
@example("select")
@example("pg_catalog")
@example("a" * 56)
@example("a" * 57)
@example("é" * 20)
def test_slug_validator_accepts_only_safe_identifiers(slug: str) -> None:
    try:
        accepted = validate_slug(slug)
    except InvalidSlugError as exc:
        assert exc.slug == slug and exc.reason
        assert "invalid tenant slug" in str(exc)
        return
    assert accepted == slug
    schema = schema_for(slug)
    assert SAFE_SCHEMA.fullmatch(schema)
    assert len(schema.encode()) <= 63  # never silently truncated by PostgreSQL
    assert quote_ident(schema) == f'"{schema}"'


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=60))
def test_quote_ident_always_yields_one_identifier(name: str) -> None:
    if "\x00" in name:
        return
    quoted = quote_ident(name)
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    assert inner.replace('""', "") .count('"') == 0  # every inner quote is doubled


HEADER = ('"""\nDoc\n\n# MIGRATION_SCOPE: {scope}\n# MIGRATION_VERSION: {version}\n'
          '# MIGRATION_DESCRIPTION: {description}\n"""\n')
metadata_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='\r\n"\\'),
    max_size=20)


def _load(files: dict[str, bytes]) -> None:
    """load_migrations must either succeed or raise MigrationSetError, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        try:
            migrations = load_migrations(folder)
        except MigrationSetError as exc:
            assert exc.defects
            for defect in exc.defects:
                assert defect.path.name in files and defect.problem
            return
        except ConfigurationError:
            raise AssertionError("the folder exists") from None
        for m in migrations:
            assert m.version == m.path.stem
            # a file without a statement loads as unfinished, never as an empty step
            assert m.upgrade_sql.strip() or m.upgrade_py or m.unfinished


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_loader_survives_arbitrary_bytes(content: bytes) -> None:
    _load({"001_fuzz.py": content})


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_loader_survives_arbitrary_text(content: str) -> None:
    _load({"001_fuzz.py": content.encode("utf-8", "surrogatepass")})


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    scope=st.one_of(st.sampled_from(["public", "tenant", "both"]), metadata_value),
    version=st.one_of(st.just("001_fuzz"), metadata_value),
    description=metadata_value,
    body=st.one_of(
        st.builds(lambda s: f"UPGRADE_SQL = {s!r}\n", st.text(max_size=40)),
        st.builds(lambda s: f"def upgrade():\n    return {s!r}\n", st.text(max_size=40)),
        st.sampled_from([
            "UPGRADE_SQL = None\n", "UPGRADE_SQL = 42\n", "upgrade = 'SELECT 1'\n",
            "def upgrade():\n    raise RuntimeError('boom')\n", "raise SystemExit(3)\n",
            "def upgrade(x):\n    return x\n", "UPGRADE_SQL = b'SELECT 1'\n", "",
            "import sys\nUPGRADE_SQL = 'x' if sys else 1\n", "1 +\n", "\x00",
            "DOWNGRADE_SQL = 5\nUPGRADE_SQL = 'SELECT 1'\n",
        ]),
    ),
    extra=st.sampled_from([{}, {"001_other.py": b"x"}, {"002_ok.py": b""},
                           {"Bad.py": b"UPGRADE_SQL='x'"}]),
)
def test_loader_survives_mutated_migration_files(
    scope: str, version: str, description: str, body: str, extra: dict[str, bytes]
) -> None:
    header = HEADER.format(scope=scope, version=version, description=description)
    _load({"001_fuzz.py": (header + body).encode(), **extra})
