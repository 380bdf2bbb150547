"""Registered callbacks: create, change, rotate secrets, send a test event."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app import formats, metrics
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


def _pinned_format(format_name: str, version: int | None) -> tuple[str, int]:
    """The format and version to pin: the version asked for, or else the newest released."""
    if format_name not in formats.format_names():
        choices = ", ".join(formats.format_names())
        raise InvalidField(
            "json", "format", f"unknown format {format_name!r}; choose from {choices}"
        )
    versions = formats.versions_of(format_name)
    if version is None:
        return format_name, versions[-1]
    if version not in versions:
        released = ", ".join(str(v) for v in versions)
        raise InvalidField(
            "json",
            "format_version",
            f"{format_name} has no version {version}; released versions: {released}",
        )
    return format_name, version


def create_callback(
    session: Session,
    tenant: Tenant,
    fields: dict[str, Any],
    settings: Settings,
) -> Callback:
    """Register a callback URL for ``tenant`` with a fresh signing secret, pinned to its
    ``format`` (the envelope by default) at ``format_version`` (by default the newest)."""
    pinned_format, pinned_version = _pinned_format(
        fields.get("format") or formats.DEFAULT_FORMAT, fields.get("format_version")
    )
    callback = Callback(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        url=_checked_url(fields["url"], settings),
        event_types=list(fields.get("event_types") or events.DEFAULT_EVENT_TYPES),
        description=fields.get("description"),
        success_status=fields.get("success_status"),
        headers=_checked_headers(fields.get("headers") or {}, settings),
        format=pinned_format,
        format_version=pinned_version,
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
    """Change the given fields; re-enabling clears the reason it was disabled.

    A new ``format`` is pinned at ``format_version`` or else its newest version. Naming the
    format the callback already has, without a version, keeps its pin: a form that sends every
    field back must not upgrade what the receiver gets.
    """
    callback = get_callback(session, tenant, callback_id)
    wanted_format = fields.get("format") or callback.format
    format_version = fields.get("format_version")
    if format_version is not None or wanted_format != callback.format:
        callback.format, callback.format_version = _pinned_format(wanted_format, format_version)
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
    metrics.after_commit(session, metrics.callback_disabled)
    session.flush()
    data = {
        "callback_id": str(callback.id),
        "url": callback.url,
        "reason": reason,
        "disabled_at": now.isoformat(),
    }
    _tell_other_callbacks(
        session, callback.tenant_id, callback.id, events.CALLBACK_DISABLED, data, now
    )
    return callback


def _tell_other_callbacks(
    session: Session,
    tenant_id: uuid.UUID,
    about: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """Publish an event about one callback to the tenant's other callbacks that subscribe to it
    (never to the callback itself: it is the one in trouble)."""
    listeners = [
        other
        for other in events.subscribed_callbacks(session, tenant_id, event_type)
        if other.id != about
    ]
    if listeners:
        events.publish(
            session,
            tenant_id=tenant_id,
            event_type=event_type,
            data=data,
            now=now,
            callbacks=listeners,
        )


def note_attempt_outcome(
    session: Session, callback_id: uuid.UUID, succeeded: bool, now: datetime, settings: Settings
) -> None:
    """Keep the callback's failure streak for one attempt; see ``note_attempt_outcomes``."""
    note_attempt_outcomes(session, callback_id, [succeeded], now, settings)


def note_attempt_outcomes(
    session: Session,
    callback_id: uuid.UUID,
    outcomes: Sequence[bool],
    now: datetime,
    settings: Settings,
) -> None:
    """Apply a batch of one callback's attempt outcomes, in order, as of ``now``.

    Keeps the failure streak; raises ``callback.failing`` once the callback has failed for
    ``callback_failing_after_seconds`` with no success, and ``callback.recovered`` at the first
    success after that, each once per incident however many deliveries and workers it spans;
    disables the callback once it has failed for ``callback_disable_after_seconds``. Two
    statements whatever the batch size (plus the events raised); a healthy callback's successes
    cost one SELECT and take no lock.
    """
    if not outcomes:
        return
    query = select(
        Callback.tenant_id,
        Callback.url,
        Callback.enabled,
        Callback.consecutive_failures,
        Callback.failing_since,
        Callback.failing_reported_at,
    ).where(Callback.id == callback_id)
    if all(outcomes):
        # Matches no row while the callback is healthy, so the common case takes no row lock.
        query = query.where(
            or_(Callback.consecutive_failures > 0, Callback.failing_reported_at.is_not(None))
        )
    # The row lock queues concurrent workers' batches for this callback, and each one then reads
    # what the one before it committed: exactly one of them sees a transition and announces it.
    # NO KEY UPDATE (key_share), as a plain UPDATE takes: new deliveries referencing this callback
    # need not wait for it, and two callbacks telling each other cannot deadlock on those keys.
    row = session.execute(query.with_for_update(key_share=True)).one_or_none()
    if row is None:
        return
    failing_after = timedelta(seconds=settings.callback_failing_after_seconds)
    disable_after = timedelta(seconds=settings.callback_disable_after_seconds)
    enabled = row.enabled
    streak, since, reported = row.consecutive_failures, row.failing_since, row.failing_reported_at
    # What happened, in order: (event type, its data), or (CALLBACK_DISABLED, the reason).
    raised: list[tuple[str, Any]] = []
    for succeeded in outcomes:
        if succeeded:
            if reported is not None and since is not None:
                incident = _incident(callback_id, row.url, since, streak)
                raised.append(
                    (events.CALLBACK_RECOVERED, incident | {"recovered_at": now.isoformat()})
                )
            streak, since, reported = 0, None, None
            continue
        streak += 1
        since = since or now
        if enabled and reported is None and since <= now - failing_after:
            reported = now
            raised.append((events.CALLBACK_FAILING, _incident(callback_id, row.url, since, streak)))
        if enabled and since <= now - disable_after:
            enabled = False
            reason = f"{streak} failed attempts in a row since {since.isoformat()} with no success"
            raised.append((events.CALLBACK_DISABLED, reason))
    session.execute(
        update(Callback)
        .where(Callback.id == callback_id)
        .values(consecutive_failures=streak, failing_since=since, failing_reported_at=reported)
    )
    for event_type, detail in raised:
        if event_type == events.CALLBACK_DISABLED:
            disable_callback(session, callback_id, detail, now)
        else:
            _tell_other_callbacks(session, row.tenant_id, callback_id, event_type, detail, now)


def _incident(
    callback_id: uuid.UUID, url: str, failing_since: datetime, failed_attempts: int
) -> dict[str, Any]:
    """What ``callback.failing`` and ``callback.recovered`` say about the incident."""
    return {
        "callback_id": str(callback_id),
        "url": url,
        "failing_since": failing_since.isoformat(),
        "failed_attempts": failed_attempts,
    }


def enable_callback(session: Session, tenant: Tenant, callback_id: uuid.UUID) -> Callback:
    """Turn a disabled callback back on with a clean failure streak."""
    callback = get_callback(session, tenant, callback_id)
    callback.enabled = True
    callback.disabled_reason = None
    # A fresh start: if it still fails, that is a new incident with its own callback.failing.
    callback.consecutive_failures = 0
    callback.failing_since = None
    callback.failing_reported_at = None
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
