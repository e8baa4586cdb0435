"""`archify new`: write the next-numbered migration file from the guide's template."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigurationError
from .loader import FILE_NAME
from .migration import Scope

TEMPLATE = '''"""
{description}

# MIGRATION_SCOPE: {scope}
# MIGRATION_VERSION: {version}
# MIGRATION_DESCRIPTION: {description}
"""

UPGRADE_SQL = """
-- TODO: the change, e.g. ALTER TABLE users ADD COLUMN IF NOT EXISTS nickname VARCHAR(100);
"""

DOWNGRADE_SQL = """
-- TODO: the exact reverse, e.g. ALTER TABLE users DROP COLUMN IF EXISTS nickname;
"""


def upgrade():
    """Apply migration"""
    return UPGRADE_SQL


def downgrade():
    """Revert migration"""
    return DOWNGRADE_SQL
'''


def next_version(folder: Path, name: str) -> str:
    """`NNN_name`, numbered one past the highest number in `folder`, same zero padding."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise ConfigurationError(f"migration name {name!r} has no letters or digits")
    numbers = [m["number"] for p in folder.glob("*.py") if (m := FILE_NAME.match(p.name))]
    width = max([3, *(len(n) for n in numbers)])
    number = max((int(n) for n in numbers), default=0) + 1
    return f"{number:0{width}d}_{slug}"


def new_migration(folder: Path, name: str, scope: Scope, description: str | None = None) -> Path:
    """Write the new file and return its path; never overwrites."""
    description = description or name.replace("_", " ")
    if "\n" in description or '"""' in description or "\\" in description:
        raise ConfigurationError(
            f"description {description!r}: one line, without triple quotes or backslashes "
            "(it goes into the file's docstring)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        version = next_version(folder, name)
        path = folder / f"{version}.py"
        with path.open("x") as out:
            out.write(TEMPLATE.format(scope=scope.value, version=version,
                                      description=description))
    except OSError as exc:
        raise ConfigurationError(f"cannot write a migration into {folder}: {exc}") from None
    return path
