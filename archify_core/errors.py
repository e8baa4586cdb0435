"""Archify's error types.

Every error a caller can act on has its own class, and every message names
what went wrong, where, and what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ArchifyError(Exception):
    """Base class of every error Archify raises on purpose."""


class ConfigurationError(ArchifyError):
    """Bad configuration: options, DSN, missing folders. CLI exit code 2."""


class DatabaseConnectionError(ConfigurationError):
    """The database cannot be reached, or refused us."""


@dataclass(frozen=True)
class MigrationDefect:
    """One problem found in one migration file."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.problem}"


class MigrationSetError(ArchifyError):
    """The migration files are not a valid set; nothing was applied."""

    def __init__(self, defects: Sequence[MigrationDefect]) -> None:
        self.defects = tuple(defects)
        lines = "\n".join(f"  - {d}" for d in self.defects)
        noun = "defect" if len(self.defects) == 1 else "defects"
        super().__init__(
            f"{len(self.defects)} {noun} in the migration files; nothing was applied:\n{lines}"
        )


class UnfinishedMigrationError(ConfigurationError):
    """A migration to apply is not written yet (its upgrade SQL has no statement, as a file
    just made by `archify new`); nothing was applied."""

    def __init__(self, files: Sequence[tuple[str, str]]) -> None:
        self.files = tuple(files)  # (file name, why it is unfinished)
        said = "; ".join(f"{name} is unfinished: {why}" for name, why in self.files)
        super().__init__(f"{said}. Nothing was applied.")


class InvalidSlugError(ArchifyError):
    """A tenant slug that is not allowed (and so never reaches SQL)."""

    def __init__(self, slug: str, reason: str) -> None:
        self.slug = slug
        self.reason = reason
        super().__init__(
            f"invalid tenant slug {slug!r}: {reason}. A slug is lowercase letters, digits "
            "and underscores, starts with a letter, and is at most 56 characters long."
        )


class TenantExistsError(ArchifyError):
    """create_tenant() for a slug that is already registered or whose schema exists."""


class TenantNotFoundError(ArchifyError):
    """A tenant slug that is not in public.tenants."""


class RegistryMissingError(ArchifyError):
    """public.tenants does not exist yet: migrate the public schema first."""

    def __init__(self) -> None:
        super().__init__(
            "public.tenants does not exist yet; run `archify public` (or `archify all`) "
            "to create the tenant registry first"
        )


class TenantCreationError(ArchifyError):
    """Creating a tenant failed; the transaction was rolled back and nothing remains."""

    def __init__(self, slug: str, step: str, cause: BaseException) -> None:
        self.slug = slug
        self.step = step
        self.cause = cause
        sqlstate = getattr(cause, "sqlstate", None)
        code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        super().__init__(
            f"creating tenant {slug!r} failed in {step}: {cause}{code}; "
            "it was rolled back, nothing was created"
        )


def sole_error(group: BaseExceptionGroup) -> BaseException:
    """The one error inside (nested) task-group wrappers, so callers catch the error
    itself (asyncpg's, ours) rather than a group; a group of several stays a group."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first error inside (nested) task-group wrappers: for tasks that fail together
    for one cause (queries side by side when the server goes away)."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        inner = inner.exceptions[0]
    return inner
