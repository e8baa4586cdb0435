"""The fleet's description: which databases it spans, from `archify.toml` or plain values.

    [databases.eu]
    dsn = "postgresql://app@eu-db/app"   # or: dsn_env = "EU_DATABASE_URL"
    concurrency = 8                        # optional; default: sized to that server
    weight = 2                             # optional; placement share, default 1

Pure: reading the file and the environment, no connection. Every mistake is a
ConfigurationError naming the file and the key; a DSN's password never appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

FLEET_FILE = "archify.toml"
FLEET_ENV = "ARCHIFY_FLEET"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEYS = {"dsn", "dsn_env", "concurrency", "weight"}


@dataclass(frozen=True, slots=True)
class Database:
    """One database of the fleet: its name (as the CLI's --database and reports say it),
    its DSN, its own concurrency (None: sized to its server) and its placement weight."""

    name: str
    dsn: str
    concurrency: int | None = None
    weight: float = 1.0

    def __repr__(self) -> str:  # never the DSN: it may hold a password
        return f"Database({self.name!r})"


def find_fleet_file(explicit: str | Path | None = None,
                    environ: Mapping[str, str] | None = None,
                    folder: Path | None = None) -> Path | None:
    """--fleet PATH, else $ARCHIFY_FLEET, else ./archify.toml if it exists, else None (one
    database, as without a fleet)."""
    environ = os.environ if environ is None else environ
    chosen = explicit or environ.get(FLEET_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigurationError(f"fleet file {path} does not exist (from "
                                     f"{'--fleet' if explicit else FLEET_ENV})")
        return path
    default = (folder or Path.cwd()) / FLEET_FILE
    # archify.toml also holds other settings ([lint]): a fleet only with [databases]
    return default if default.is_file() and _names_databases(default) else None


def _names_databases(path: Path) -> bool:
    import tomllib

    try:
        return "databases" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True  # let load_fleet_file say what is wrong with it


def load_fleet_file(path: Path, environ: Mapping[str, str] | None = None) -> list[Database]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read fleet file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"fleet file {path} is not valid TOML: {exc}") from None
    databases = data.get("databases")
    if not isinstance(databases, dict) or not databases:
        raise ConfigurationError(f"fleet file {path} names no databases: add a "
                                 "[databases.NAME] table with a dsn or dsn_env")
    return fleet_databases(databases, environ, where=str(path))


def fleet_databases(databases: Mapping[str, Mapping[str, Any]],
                    environ: Mapping[str, str] | None = None, *,
                    where: str = "the fleet") -> list[Database]:
    """The plain-values form the library takes: {name: {"dsn": …, "concurrency": …}}."""
    environ = os.environ if environ is None else environ
    out = [_database(name, spec, environ, where) for name, spec in databases.items()]
    if not out:
        raise ConfigurationError(f"{where} names no databases")
    return out


def _database(name: str, spec: Mapping[str, Any], environ: Mapping[str, str],
              where: str) -> Database:
    at = f"{where}: databases.{name}"
    if not _NAME.match(name):
        raise ConfigurationError(f"{at}: a database name is lowercase letters, digits, '_' "
                                 "and '-' (at most 63)")
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{at} must be a table with dsn or dsn_env")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigurationError(f"{at}: unknown key {unknown[0]!r} (known: "
                                 f"{', '.join(sorted(_KEYS))})")
    if ("dsn" in spec) == ("dsn_env" in spec):
        raise ConfigurationError(f"{at}: give exactly one of dsn and dsn_env")
    if "dsn" in spec:
        dsn = spec["dsn"]
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigurationError(f"{at}.dsn must be a non-empty string")
    else:
        variable = spec["dsn_env"]
        dsn = environ.get(variable, "") if isinstance(variable, str) else ""
        if not dsn.strip():
            raise ConfigurationError(f"{at}.dsn_env: the environment variable {variable} "
                                     "is not set (or empty)")
    concurrency = spec.get("concurrency")
    if concurrency is not None and (not _is_int(concurrency) or concurrency < 1):
        raise ConfigurationError(f"{at}.concurrency must be a whole number ≥ 1")
    weight = spec.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ConfigurationError(f"{at}.weight must be a number > 0")
    return Database(name, dsn, concurrency, float(weight))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choose(databases: Sequence[Database], names: Sequence[str]) -> list[Database]:
    """The databases named by --database (all of them when none is named)."""
    if not names:
        return list(databases)
    known = {d.name: d for d in databases}
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigurationError(f"no database {missing[0]!r} in the fleet (it has: "
                                 f"{', '.join(known)})")
    return [known[n] for n in dict.fromkeys(names)]
