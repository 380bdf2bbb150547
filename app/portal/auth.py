"""Signing in to the portal with an API key, and who is signed in.

The session holds only the key's prefix (a public identifier, listed by ``GET /v1/keys``), never
the key: the cookie is signed, not encrypted. Each request looks the prefix up again, so revoking
the key signs out every portal session made with it.
"""

from __future__ import annotations

import time

from flask import g, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.logs import add_log_context
from app.models import ApiKey, Tenant
from app.portal.csrf import renew_csrf_token
from app.services.tenants import authenticate
from app.web import db, settings

_SESSION_KEY = "key_prefix"
_SIGNED_IN_AT = "signed_in_at"


def tenant_of_key_prefix(db_session: Session, prefix: str) -> Tenant | None:
    """The tenant of the unrevoked key with this prefix, or None."""
    key = db_session.scalar(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    )
    return key.tenant if key is not None else None


def sign_in(api_key: str) -> Tenant | None:
    """Start a session for the key's tenant; None (and no session) for a wrong or revoked key."""
    api_key = api_key.strip()
    tenant = authenticate(db(), api_key)
    if tenant is None:
        return None
    # A new session from scratch, so nothing chosen before signing in (a planted token) survives.
    session.clear()
    renew_csrf_token()
    session[_SESSION_KEY] = api_key.partition(".")[0]
    # Flask re-signs the cookie whenever it changes, which would stretch the session for as long
    # as it is used: the sign-in time bounds it instead.
    session[_SIGNED_IN_AT] = int(time.time())
    session.permanent = True  # the cookie expires with it too
    return tenant


def sign_out() -> None:
    """End the session; the browser is told to drop the cookie."""
    session.clear()


def _expired(signed_in_at: object) -> bool:
    if not isinstance(signed_in_at, int):
        return True
    return time.time() - signed_in_at > settings().portal_session_seconds


def signed_in_tenant() -> Tenant | None:
    """The tenant this session is signed in as, or None."""
    if "portal_tenant" not in g:
        prefix = session.get(_SESSION_KEY)
        tenant = None
        if isinstance(prefix, str) and not _expired(session.get(_SIGNED_IN_AT)):
            tenant = tenant_of_key_prefix(db(), prefix)
        if tenant is None and prefix is not None:
            session.clear()  # expired, or the key was revoked (or its tenant deleted)
        g.portal_tenant = tenant
        if tenant is not None:
            add_log_context(tenant_id=tenant.id)
    return g.portal_tenant


def current_tenant() -> Tenant:
    """The signed-in tenant; the blueprint's guard has made sure there is one."""
    tenant = signed_in_tenant()
    assert tenant is not None, "portal views run only after the sign-in guard"
    return tenant
