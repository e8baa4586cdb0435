"""Apache Airflow provider for Archify: a hook, operators and an example fleet-rollout DAG.

Importing this package does not import Airflow: Airflow calls `get_provider_info()`
through the `apache_airflow_provider` entry point while it is itself starting up,
so the hook and operators live in submodules::

    from archify_airflow.hooks import ArchifyHook
    from archify_airflow.operators import ArchifyMigrateOperator
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["get_provider_info"]

DISTRIBUTION = "archify"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def get_provider_info() -> dict[str, Any]:
    """What `airflow providers list` shows and the connection form Airflow offers.

    `package-name` must be the installed distribution's name, or every `airflow`
    command refuses to start.
    """
    return {
        "package-name": DISTRIBUTION,
        "name": "Archify",
        "description": "Concurrent SQL migrations for schema-per-tenant PostgreSQL, "
        "fanned out over Airflow workers.",
        "versions": [_version()],
        "connection-types": [
            {
                "connection-type": "archify",
                "hook-class-name": "archify_airflow.hooks.ArchifyHook",
            }
        ],
    }
