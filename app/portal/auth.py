"""Signing in to the portal with an API key, and who is signed in.

The cookie holds only the id of a session row, never the key: the cookie is signed, not
encrypted. Each request looks the session up again: signing out ends the row, and revoking the
key ends every portal session made with it, so a copied cookie stops working at once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from flask import g, session
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.logs import add_log_context
from app.models import ApiKey, PortalSession, Tenant
from app.portal.csrf import renew_csrf_token
from app.services.portal_links import redeem_link
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
    assert key_id is not None, "the key authenticated a moment ago"
    _start(PortalSession(id=uuid.uuid4(), api_key_id=key_id))
    return tenant


def sign_in_with_link(token: str) -> None:
    """Use up a portal link and start the session it grants (read-only if the link was);
    ``LinkRefused`` if it cannot. The caller commits."""
    link = redeem_link(db(), token, utcnow())
    _start(
        PortalSession(
            id=uuid.uuid4(), api_key_id=link.api_key_id, read_only=link.read_only, from_link=True
        )
    )


def _start(portal_session: PortalSession) -> None:
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


def tenant_of_session(db_session: Session, session_id: uuid.UUID) -> SignedIn | None:
    """The tenant of a portal session that is neither ended nor made with (or from a link minted
    with) a revoked key, and what the session may do."""
    found = db_session.execute(
        select(Tenant, PortalSession.read_only, PortalSession.from_link)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .join(PortalSession, PortalSession.api_key_id == ApiKey.id)
        .where(
            PortalSession.id == session_id,
            PortalSession.ended_at.is_(None),
            ApiKey.revoked_at.is_(None),
        )
    ).one_or_none()
    return None if found is None else SignedIn(*found)


@dataclass(frozen=True)
class SignedIn:
    tenant: Tenant
    read_only: bool  # from a read-only link: pages only
    from_link: bool  # from a portal link, not a pasted key


def signed_in() -> SignedIn | None:
    """Who this session is signed in as, and how; or None."""
    if "portal_signed_in" not in g:
        session_id = _session_id()
        found = None
        if session_id is not None and not _expired(session.get(_SIGNED_IN_AT)):
            found = tenant_of_session(db(), session_id)
        if found is None and session.get(_SESSION_KEY) is not None:
            session.clear()  # expired, signed out, or the key was revoked (or its tenant deleted)
        g.portal_signed_in = found
        if found is not None:
            add_log_context(tenant_id=found.tenant.id)
    return g.portal_signed_in


def signed_in_tenant() -> Tenant | None:
    """The tenant this session is signed in as, or None."""
    found = signed_in()
    return None if found is None else found.tenant


def is_read_only() -> bool:
    """The session came from a read-only portal link."""
    found = signed_in()
    return found is not None and found.read_only


def current_tenant() -> Tenant:
    """The signed-in tenant; the blueprint's guard has made sure there is one."""
    tenant = signed_in_tenant()
    assert tenant is not None, "portal views run only after the sign-in guard"
    return tenant
