"""/v1/portal/links: one-time, expiring portal sign-in URLs minted by the tenant's backend."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.errors import InvalidField
from app.models import ApiKey
from app.schemas import PortalLinkCreateSchema, PortalLinkSchema
from app.services.portal_links import mint_link
from app.web import current_api_key_prefix, current_tenant, db, require_tenant, settings

blp = Blueprint(
    "portal_links",
    __name__,
    url_prefix=f"{API_PREFIX}/portal/links",
    description="Sign your own staff or customers in to the portal without giving them a key.",
)
blp.before_request(require_tenant)


@blp.route("", methods=["POST"])
@blp.arguments(PortalLinkCreateSchema)
@blp.response(201, PortalLinkSchema)
def create_portal_link(body: dict[str, Any]):
    """A sign-in URL for the portal, bound to your tenant: it works once and expires. Hand it to
    the person (a redirect from your own app, say); they never see an API key. Revoking the key
    this request is made with ends the link and the session it started."""
    limit = settings().portal_link_max_seconds
    if body["expires_in"] > limit:
        raise InvalidField("json", "expires_in", f"must be at most {limit} seconds")
    tenant = current_tenant()
    key_id = db().scalar(select(ApiKey.id).where(ApiKey.prefix == current_api_key_prefix()))
    assert key_id is not None, "the request's key authenticated a moment ago"
    minted = mint_link(
        db(),
        tenant,
        key_id,
        read_only=body["read_only"],
        expires_in=timedelta(seconds=body["expires_in"]),
        now=utcnow(),
    )
    db().commit()
    return {
        "url": f"{settings().public_url}/portal/link/{minted.token}",
        "read_only": minted.link.read_only,
        "expires_at": minted.link.expires_at,
    }
