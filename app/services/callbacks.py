"""Registered callbacks: create, change, rotate secrets, send a test event."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
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


# Headers a tenant may not set: hop-by-hop ones, the ones that frame the request, and ours.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _checked_headers(headers: dict[str, str], settings: Settings) -> dict[str, str]:
    if len(headers) > settings.max_callback_headers:
        raise InvalidField(
            "json", "headers", f"at most {settings.max_callback_headers} custom headers"
        )
    for name, value in headers.items():
        lowered = name.lower()
        if not _HEADER_NAME.match(name):
            raise InvalidField("json", "headers", f"{name!r} is not a valid header name")
        if lowered in FORBIDDEN_HEADERS or lowered.startswith("webhook-"):
            raise InvalidField("json", "headers", f"{name!r} cannot be set on a callback")
        if any(ch in value for ch in "\r\n\x00"):
            raise InvalidField("json", "headers", f"the value of {name!r} has a line break")
    if len({name.lower() for name in headers}) != len(headers):
        raise InvalidField("json", "headers", "a header is named twice")
    return dict(headers)


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
        headers=_checked_headers(fields.get("headers") or {}, settings),
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
    if "headers" in fields:
        callback.headers = _checked_headers(fields["headers"] or {}, settings)
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


def disable_callback(
    session: Session, callback_id: uuid.UUID, reason: str, now: datetime
) -> Callback | None:
    """Stop sending to a callback and tell the tenant's other callbacks (``callback.disabled``)."""
    callback = session.scalar(select(Callback).where(Callback.id == callback_id).with_for_update())
    if callback is None or not callback.enabled:
        return None
    callback.enabled = False
    callback.disabled_reason = reason
    session.flush()
    listeners = [
        other
        for other in events.subscribed_callbacks(
            session, callback.tenant_id, events.CALLBACK_DISABLED
        )
        if other.id != callback.id
    ]
    if listeners:
        data = {
            "callback_id": str(callback.id),
            "url": callback.url,
            "reason": reason,
            "disabled_at": now.isoformat(),
        }
        events.publish(
            session,
            tenant_id=callback.tenant_id,
            event_type=events.CALLBACK_DISABLED,
            data=data,
            now=now,
            callbacks=listeners,
        )
    return callback


def note_attempt_outcome(
    session: Session, callback_id: uuid.UUID, succeeded: bool, now: datetime, settings: Settings
) -> None:
    """Keep the callback's failure streak; disable it once it has failed for too long."""
    if succeeded:
        # Matches no row while the callback is healthy, so the common case takes no row lock.
        session.execute(
            update(Callback)
            .where(Callback.id == callback_id, Callback.consecutive_failures > 0)
            .values(consecutive_failures=0, failing_since=None)
        )
        return
    row = session.execute(
        update(Callback)
        .where(Callback.id == callback_id)
        .values(
            consecutive_failures=Callback.consecutive_failures + 1,
            failing_since=func.coalesce(Callback.failing_since, now),
        )
        .returning(Callback.enabled, Callback.failing_since, Callback.consecutive_failures)
    ).one_or_none()
    limit = timedelta(seconds=settings.callback_disable_after_seconds)
    if row is not None and row.enabled and row.failing_since <= now - limit:
        disable_callback(
            session,
            callback_id,
            f"{row.consecutive_failures} failed attempts in a row since "
            f"{row.failing_since.isoformat()} with no success",
            now,
        )


def enable_callback(session: Session, tenant: Tenant, callback_id: uuid.UUID) -> Callback:
    """Turn a disabled callback back on with a clean failure streak."""
    callback = get_callback(session, tenant, callback_id)
    callback.enabled = True
    callback.disabled_reason = None
    callback.consecutive_failures = 0
    callback.failing_since = None
    session.flush()
    return callback


def recover_callback(
    session: Session,
    tenant: Tenant,
    callback_id: uuid.UUID,
    since: datetime,
    now: datetime,
    settings: Settings,
) -> int:
    """Send again every failed delivery to this callback created since ``since``; the count."""
    callback = get_callback(session, tenant, callback_id)
    ids = list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.callback_id == callback.id,
                Delivery.status == DeliveryStatus.FAILED,
                Delivery.created_at >= since,
            )
            .values(
                status=DeliveryStatus.PENDING,
                # One more attempt each, as for a manual retry: a recovery, not a new schedule.
                attempt_count=len(settings.retry_schedule),
                next_attempt_at=now,
                enqueued_at=now,
            )
            .returning(Delivery.id)
        )
    )
    if ids:
        events.wake_deliveries(session)
    return len(ids)


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
