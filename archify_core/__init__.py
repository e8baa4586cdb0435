"""Archify: fast, safe, concurrent SQL migrations for schema-per-tenant PostgreSQL."""

from .engine import Engine
from .errors import (
    ArchifyError,
    ConfigurationError,
    DatabaseConnectionError,
    InvalidSlugError,
    MigrationDefect,
    MigrationSetError,
    RegistryMissingError,
    TenantCreationError,
    TenantExistsError,
    TenantNotFoundError,
)
from .events import (
    Event,
    MigrationApplied,
    MigrationRetrying,
    Notice,
    RolloutFinished,
    RolloutStarted,
    SchemaFinished,
    SchemaStarted,
)
from .hookspecs import hookimpl
from .ledger import Tenant
from .loader import load_migrations
from .migration import Migration, MigrationSet, Scope
from .report import AppliedMigration, Failure, Outcome, RolloutReport, SchemaResult
from .status import FleetStatus, SchemaStatus
from .tenants import schema_for, validate_slug

__all__ = [
    "AppliedMigration",
    "ArchifyError",
    "ConfigurationError",
    "DatabaseConnectionError",
    "Engine",
    "Event",
    "Failure",
    "FleetStatus",
    "InvalidSlugError",
    "Migration",
    "MigrationApplied",
    "MigrationDefect",
    "MigrationRetrying",
    "MigrationSet",
    "MigrationSetError",
    "Notice",
    "Outcome",
    "RegistryMissingError",
    "RolloutFinished",
    "RolloutReport",
    "RolloutStarted",
    "SchemaFinished",
    "SchemaResult",
    "SchemaStarted",
    "SchemaStatus",
    "Scope",
    "Tenant",
    "TenantCreationError",
    "TenantExistsError",
    "TenantNotFoundError",
    "hookimpl",
    "load_migrations",
    "schema_for",
    "validate_slug",
]
