"""Signing in to the portal with an API key, and who is signed in.

The cookie holds only the id of a session row, never the key: the cookie is signed, not
encrypted. Each request looks the session up again: signing out ends the row, and revoking the
key ends every portal session made with it, so a copied cookie stops working at once.
"""

from __future__ import annotations

import time
import uuid

from flask import g, session
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.logs import add_log_context
from app.models import ApiKey, PortalSession, Tenant
from app.portal.csrf import renew_csrf_token
from app.services.tenants import authenticate
from app.web import db, settings

_SESSION_KEY = "portal_session"
_SIGNED_IN_AT = "signed_in_at"


def sign_in(api_key: str) -> Tenant | None:
    """Start a session for the key's tenant; None (and no session) for a wrong or revoked key.
    The caller commits (the session's row)."""
    api_key = api_key.strip()
    tenant = authenticate(db(), api_key)
    if tenant is None:
        return None
    key_id = db().scalar(select(ApiKey.id).where(ApiKey.prefix == api_key.partition(".")[0]))
    portal_session = PortalSession(id=uuid.uuid4(), api_key_id=key_id)
    db().add(portal_session)
    db().flush()
    # A new session from scratch, so nothing chosen before signing in (a planted token) survives.
    session.clear()
    renew_csrf_token()
    session[_SESSION_KEY] = str(portal_session.id)
    # Flask re-signs the cookie whenever it changes, which would stretch the session for as long
    # as it is used: the sign-in time bounds it instead.
    session[_SIGNED_IN_AT] = int(time.time())
    session.permanent = True  # the cookie expires with it too
    return tenant


def sign_out() -> None:
    """End the session on the server, so the cookie is worthless even if it was copied; the
    browser is told to drop it. The caller commits."""
    session_id = _session_id()
    if session_id is not None:
        db().execute(
            update(PortalSession)
            .where(PortalSession.id == session_id, PortalSession.ended_at.is_(None))
            .values(ended_at=func.now())
        )
    session.clear()


def _session_id() -> uuid.UUID | None:
    try:
        return uuid.UUID(str(session.get(_SESSION_KEY)))
    except ValueError:
        return None


def _expired(signed_in_at: object) -> bool:
    if not isinstance(signed_in_at, int):
        return True
    return time.time() - signed_in_at > settings().portal_session_seconds


def tenant_of_session(db_session: Session, session_id: uuid.UUID) -> Tenant | None:
    """The tenant of a portal session that is neither ended nor made with a revoked key."""
    return db_session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .join(PortalSession, PortalSession.api_key_id == ApiKey.id)
        .where(
            PortalSession.id == session_id,
            PortalSession.ended_at.is_(None),
            ApiKey.revoked_at.is_(None),
        )
    )


def signed_in_tenant() -> Tenant | None:
    """The tenant this session is signed in as, or None."""
    if "portal_tenant" not in g:
        session_id = _session_id()
        tenant = None
        if session_id is not None and not _expired(session.get(_SIGNED_IN_AT)):
            tenant = tenant_of_session(db(), session_id)
        if tenant is None and session.get(_SESSION_KEY) is not None:
            session.clear()  # expired, signed out, or the key was revoked (or its tenant deleted)
        g.portal_tenant = tenant
        if tenant is not None:
            add_log_context(tenant_id=tenant.id)
    return g.portal_tenant


def current_tenant() -> Tenant:
    """The signed-in tenant; the blueprint's guard has made sure there is one."""
    tenant = signed_in_tenant()
    assert tenant is not None, "portal views run only after the sign-in guard"
    return tenant
