"""What a tenant sets for itself: the origins its jobs' redirect links may send browsers to, and
the origins whose pages may read its streams (CORS).

A callback URL proves nothing about who owns a site (anyone can register any URL), so redirect
targets are a list of their own that the tenant keeps on purpose. An origin is compared strictly:
scheme, host and port, exactly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidField
from app.key_generation import api_keys_changed
from app.models import Tenant
from config.settings import Settings

MAX_ORIGINS = 20
# Two lists, kept apart: where a redirect link may send a browser, and which sites' pages may read
# the tenant's streams (CORS). Trusting an origin for one says nothing about the other.
ORIGIN_LISTS = ("redirect_origins", "cors_origins")


def origin_of(url: str) -> str:
    """The origin of a URL as stored and compared: scheme and host:port, the host lowercase."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def checked_origin(value: str, settings: Settings, field: str) -> str:
    """A redirect origin as given (``https://shop.example``), or a 422 naming ``field``."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 -- property access raises ValueError on a bad port
    except ValueError:
        raise InvalidField("json", field, f"{value!r} is not an origin") from None
    schemes = {"https"} if settings.https_only else {"http", "https"}
    if (
        parts.scheme not in schemes
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise InvalidField(
            "json",
            field,
            f"{value!r} is not an origin: give {' or '.join(sorted(schemes))}://host[:port], "
            "nothing after it",
        )
    return origin_of(value.strip())


def update_tenant_settings(
    session: Session, tenant: Tenant, fields: dict[str, Any], settings: Settings
) -> Tenant:
    """Change the tenant's own settings; the tenant as stored."""
    stored = session.scalar(select(Tenant).where(Tenant.id == tenant.id).with_for_update())
    assert stored is not None
    for field in ORIGIN_LISTS:
        if field in fields:
            origins = [checked_origin(value, settings, field) for value in fields[field]]
            if len(set(origins)) > MAX_ORIGINS:
                raise InvalidField("json", field, f"at most {MAX_ORIGINS} origins")
            setattr(stored, field, list(dict.fromkeys(origins)))
    if "allow_uncatalogued_event_types" in fields:
        stored.allow_uncatalogued_event_types = fields["allow_uncatalogued_event_types"]
    session.flush()
    api_keys_changed(session)  # web processes remember tenants with their keys
    return stored


def is_redirect_target(tenant: Tenant, url: str) -> bool:
    """Whether ``url``'s origin is exactly one the tenant listed (never a prefix match)."""
    return origin_of(url) in (tenant.redirect_origins or ())


def check_redirect_url(tenant: Tenant, redirect_url: str) -> None:
    """No open redirects: the target must be on one of the tenant's listed origins."""
    if not is_redirect_target(tenant, redirect_url):
        raise InvalidField(
            "json",
            "redirect_url",
            "its origin is not one of your redirect origins; add it with PATCH /v1/tenant",
        )
