"""Archify: fast, safe, concurrent SQL migrations for schema-per-tenant PostgreSQL.

The names below are imported on first use (PEP 562), so that a command that needs
none of them (`archify --help`) does not pay for asyncpg and the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        UnfinishedMigrationError,
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

# public name -> the module that defines it
_WHERE = {
    "AppliedMigration": "report",
    "ArchifyError": "errors",
    "ConfigurationError": "errors",
    "Database": "fleet_config",
    "DatabaseConnectionError": "errors",
    "Engine": "engine",
    "Event": "events",
    "Failure": "report",
    "Fleet": "fleet",
    "FleetReport": "fleet",
    "FleetStatus": "status",
    "FleetWideStatus": "fleet",
    "InvalidSlugError": "errors",
    "Migration": "migration",
    "MigrationApplied": "events",
    "MigrationDefect": "errors",
    "MigrationRetrying": "events",
    "MigrationSet": "migration",
    "MigrationSetError": "errors",
    "Notice": "events",
    "Outcome": "report",
    "RegistryMissingError": "errors",
    "RolloutFinished": "events",
    "RolloutReport": "report",
    "RolloutStarted": "events",
    "SchemaFinished": "events",
    "SchemaResult": "report",
    "SchemaStarted": "events",
    "SchemaStatus": "status",
    "Scope": "migration",
    "Tenant": "ledger",
    "TenantCreationError": "errors",
    "TenantExistsError": "errors",
    "TenantNotFoundError": "errors",
    "UnfinishedMigrationError": "errors",
    "find_fleet_file": "fleet_config",
    "fleet_databases": "fleet_config",
    "hookimpl": "hookspecs",
    "load_fleet_file": "fleet_config",
    "load_migrations": "loader",
    "schema_for": "tenants",
    "validate_slug": "tenants",
}

__all__ = [
    "AppliedMigration",
    "ArchifyError",
    "ConfigurationError",
    "Database",
    "DatabaseConnectionError",
    "Engine",
    "Event",
    "Failure",
    "Fleet",
    "FleetReport",
    "FleetStatus",
    "FleetWideStatus",
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
    "UnfinishedMigrationError",
    "find_fleet_file",
    "fleet_databases",
    "hookimpl",
    "load_fleet_file",
    "load_migrations",
    "schema_for",
    "validate_slug",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
