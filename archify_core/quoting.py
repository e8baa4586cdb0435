"""Identifier and literal quoting, and the ledger's and the registry's names. Pure.

No identifier reaches SQL unquoted and no input string is interpolated except
through quote_ident / quote_literal.
"""

from __future__ import annotations

LEDGER_TABLE = "schema_migrations"
REGISTRY_TABLE = "public.tenants"


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, always double-quoted."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A standard-conforming string literal."""
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def ledger_name(schema: str) -> str:
    return f"{quote_ident(schema)}.{LEDGER_TABLE}"
