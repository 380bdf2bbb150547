"""Idempotency keys, as jobs and bulk replays take them: a key maps to the first request made
with it for ``BOOMERANG_IDEMPOTENCY_TTL_SECONDS``; a repeat with the same body gets that first
answer, one with another body a 409."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.models import DeliveryReplay, Job, Tenant
from config.settings import Settings

Row = TypeVar("Row", Job, DeliveryReplay)


def find_by_idempotency_key(
    session: Session,
    model: type[Row],
    tenant: Tenant,
    key: str | None,
    now: datetime,
    settings: Settings,
) -> Row | None:
    """The tenant's live request made with ``key``; an expired one gives its key up (so this
    new request may take it) and counts as none."""
    found = session.scalar(
        select(model).where(model.tenant_id == tenant.id, model.idempotency_key == key)
    )
    if found is not None and found.created_at < now - timedelta(
        seconds=settings.idempotency_ttl_seconds
    ):
        found.idempotency_key = None
        session.flush()
        return None
    return found


def check_same_request(found: Job | DeliveryReplay, request_fingerprint: str) -> None:
    """A repeat must be the same request; another body under the same key is a 409."""
    if found.request_fingerprint != request_fingerprint:
        raise Conflict("This Idempotency-Key was used with a different request body.")
