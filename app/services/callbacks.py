"""Registered callbacks: create, change, rotate secrets, send a test event."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import InvalidField, NotFound
from app.models import Callback, Delivery, DeliveryStatus, Tenant
from app.services import events
from app.signing import new_signing_secret
from app.url_guard import BlockedUrl, check_callback_url
from config.settings import Settings


def _checked_url(url: str, settings: Settings, field: str = "url") -> str:
    try:
        check_callback_url(url, settings)
    except BlockedUrl as exc:
        raise InvalidField("json", field, str(exc)) from None
    return url


def create_callback(
    session: Session, tenant: Tenant, fields: dict[str, Any], settings: Settings
) -> Callback:
    """Register a callback URL for ``tenant`` with a fresh signing secret."""
    callback = Callback(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        url=_checked_url(fields["url"], settings),
        event_types=list(fields.get("event_types") or events.DEFAULT_EVENT_TYPES),
        description=fields.get("description"),
        success_status=fields.get("success_status"),
        enabled=True,
        secret=new_signing_secret(),
    )
    session.add(callback)
    session.flush()
    return callback


def list_callbacks(session: Session, tenant: Tenant) -> list[Callback]:
    """The tenant's callbacks, oldest first."""
    return list(
        session.scalars(
            select(Callback).where(Callback.tenant_id == tenant.id).order_by(Callback.created_at)
        )
    )


def get_callback(session: Session, tenant: Tenant, callback_id: uuid.UUID) -> Callback:
    """One of the tenant's callbacks; another tenant's is as absent as a missing one."""
    callback = session.scalar(
        select(Callback).where(Callback.id == callback_id, Callback.tenant_id == tenant.id)
    )
    if callback is None:
        raise NotFound("No such callback.")
    return callback


def update_callback(
    session: Session,
    tenant: Tenant,
    callback_id: uuid.UUID,
    fields: dict[str, Any],
    settings: Settings,
) -> Callback:
    """Change the given fields; re-enabling clears the reason it was disabled."""
    callback = get_callback(session, tenant, callback_id)
    if "url" in fields:
        callback.url = _checked_url(fields["url"], settings)
    if "event_types" in fields:
        callback.event_types = list(fields["event_types"])
    for name in ("description", "success_status"):
        if name in fields:
            setattr(callback, name, fields[name])
    if "enabled" in fields:
        callback.enabled = fields["enabled"]
        callback.disabled_reason = None if callback.enabled else "disabled by the tenant"
    session.flush()
    return callback


def delete_callback(session: Session, tenant: Tenant, callback_id: uuid.UUID) -> None:
    """Delete the callback and cancel what was still waiting to reach it; the log stays."""
    callback = get_callback(session, tenant, callback_id)
    session.execute(
        update(Delivery)
        .where(Delivery.callback_id == callback.id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.CANCELLED, next_attempt_at=None)
    )
    session.delete(callback)
    session.flush()


def disable_callback(session: Session, callback_id: uuid.UUID, reason: str) -> None:
    """Stop sending to a callback (a receiver answered 410 Gone, say)."""
    session.execute(
        update(Callback)
        .where(Callback.id == callback_id)
        .values(enabled=False, disabled_reason=reason)
    )


def rotate_secret(
    session: Session, tenant: Tenant, callback_id: uuid.UUID, now: datetime, settings: Settings
) -> Callback:
    """New secret now; the old one keeps signing beside it for the grace period."""
    callback = get_callback(session, tenant, callback_id)
    callback.previous_secret = callback.secret
    callback.previous_secret_expires_at = now + timedelta(
        seconds=settings.secret_rotation_grace_seconds
    )
    callback.secret = new_signing_secret()
    session.flush()
    return callback


def signing_secrets(callback: Callback, now: datetime) -> list[str]:
    """The secrets a delivery to ``callback`` is signed with right now, newest first."""
    secrets = [callback.secret]
    expires = callback.previous_secret_expires_at
    if callback.previous_secret and expires and expires > now:
        secrets.append(callback.previous_secret)
    return secrets


def send_test_event(
    session: Session, tenant: Tenant, callback_id: uuid.UUID, now: datetime
) -> Delivery:
    """Queue a ``callback.test`` event to this one callback, enabled or not."""
    callback = get_callback(session, tenant, callback_id)
    data = {"callback_id": str(callback.id), "message": "This is a test event from Boomerang."}
    (delivery,) = events.publish(
        session,
        tenant_id=tenant.id,
        event_type=events.CALLBACK_TEST,
        data=data,
        now=now,
        callbacks=[callback],
    )
    return delivery
