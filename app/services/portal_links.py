"""Portal links: a tenant's backend mints a one-time, expiring sign-in URL for one of its people,
who then never handles an API key (as Svix's app-portal access and Convoy's portal links do).

Only a SHA-256 of the token is stored. Redeeming is one conditional UPDATE, so of two browsers
racing with the same link exactly one gets in. The session it starts is tied to the key that
minted the link: revoking that key ends it, as it ends the key's own portal sessions.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import ApiKey, PortalLink, Tenant

TOKEN_BYTES = 32


class LinkProblem(enum.StrEnum):
    """Why a link does not sign anyone in, as its page says."""

    UNKNOWN = "This sign-in link is not valid. Ask for a new one."
    USED = "This sign-in link was already used; each link signs in once. Ask for a new one."
    EXPIRED = "This sign-in link has expired. Ask for a new one."
    REVOKED = "The API key that made this sign-in link was revoked. Ask for a new one."


class LinkRefused(Exception):
    def __init__(self, problem: LinkProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


@dataclass(frozen=True)
class MintedLink:
    link: PortalLink
    token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint_link(
    session: Session,
    tenant: Tenant,
    api_key_id: uuid.UUID,
    *,
    read_only: bool,
    expires_in: timedelta,
    now: datetime,
) -> MintedLink:
    """A new link for ``tenant``; the token is in the answer only."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = PortalLink(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        api_key_id=api_key_id,
        token_hash=_hash(token),
        read_only=read_only,
        expires_at=now + expires_in,
    )
    session.add(link)
    session.flush()
    return MintedLink(link=link, token=token)


def check_link(session: Session, token: str, now: datetime) -> PortalLink:
    """The link, if it would sign in now; otherwise ``LinkRefused`` saying why. Changes nothing:
    a mail scanner or chat preview that fetches the page does not use the link up."""
    link = session.scalar(select(PortalLink).where(PortalLink.token_hash == _hash(token)))
    if link is None:
        raise LinkRefused(LinkProblem.UNKNOWN)
    if link.used_at is not None:
        raise LinkRefused(LinkProblem.USED)
    if link.expires_at <= now:
        raise LinkRefused(LinkProblem.EXPIRED)
    revoked = session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == link.api_key_id))
    if revoked is not None:
        raise LinkRefused(LinkProblem.REVOKED)
    return link


def redeem_link(session: Session, token: str, now: datetime) -> PortalLink:
    """Use the link up and return it; ``LinkRefused`` if it cannot sign in. The caller commits."""
    link = check_link(session, token, now)
    used = session.execute(
        update(PortalLink)
        .where(
            PortalLink.id == link.id,
            PortalLink.used_at.is_(None),
            PortalLink.expires_at > now,
        )
        .values(used_at=now)
        .returning(PortalLink.id)
    ).scalar()
    if used is None:  # another browser used it between the check and here
        raise LinkRefused(LinkProblem.USED)
    return link
