"""Tenant slugs and the schema names they map to. Pure; no SQL runs here."""

from __future__ import annotations

import re

from .errors import InvalidSlugError

SCHEMA_PREFIX = "tenant_"
MAX_IDENTIFIER_BYTES = 63
MAX_SLUG_LENGTH = MAX_IDENTIFIER_BYTES - len(SCHEMA_PREFIX)
_SLUG = re.compile(r"[a-z][a-z0-9_]*")


def validate_slug(slug: object) -> str:
    """Return `slug` if it is a valid tenant slug; raise InvalidSlugError otherwise."""
    if not isinstance(slug, str):
        raise InvalidSlugError(repr(slug), f"a slug must be a string, not {type(slug).__name__}")
    if not slug:
        raise InvalidSlugError(slug, "it is empty")
    if not slug.isascii():
        raise InvalidSlugError(slug, "it contains non-ASCII characters")
    if _SLUG.fullmatch(slug) is None:
        if not slug[0].isalpha():
            raise InvalidSlugError(slug, "it must start with a lowercase letter")
        bad = sorted({c for c in slug if not (c.islower() or c.isdigit() or c == "_")})
        raise InvalidSlugError(slug, f"it contains {''.join(bad)!r}")
    if len(slug) > MAX_SLUG_LENGTH:
        raise InvalidSlugError(
            slug,
            f"it is {len(slug)} characters long; schema {SCHEMA_PREFIX}<slug> must fit "
            f"PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit",
        )
    return slug


def schema_for(slug: str) -> str:
    """The schema that holds tenant `slug`'s data."""
    return SCHEMA_PREFIX + validate_slug(slug)


def registry_problem(slug: str, schema_name: str | None) -> str | None:
    """Why a public.tenants row cannot be trusted, or None if it is sound."""
    try:
        expected = schema_for(slug)
    except InvalidSlugError as exc:
        return f"registry row has an invalid slug: {exc.reason}"
    if schema_name is not None and schema_name != expected:
        return (
            f"registry row says schema {schema_name!r} but slug {slug!r} maps to "
            f"{expected!r}; fix public.tenants.schema_name before migrating this tenant"
        )
    return None
