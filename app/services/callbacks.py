"""Registered callbacks: create, change, rotate secrets, send a test event."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app import events, formats
from app.errors import Conflict, InvalidField, NotFound
from app.headers import FORBIDDEN_HEADERS, HEADER_NAME, HEADER_VALUE, MASKED, SENSITIVE_HEADERS
from app.models import Callback, Delivery, DeliveryStatus, Tenant
from app.queues import wake_deliveries
from app.services import outbox
from app.signing import new_signing_secret
from app.url_guard import BlockedUrl, check_callback_url
from config.settings import Settings


def checked_url(url: str, settings: Settings, field: str = "url") -> str:
    try:
        check_callback_url(url, settings)
    except BlockedUrl as exc:
        raise InvalidField("json", field, str(exc)) from None
    return url


def _checked_headers(headers: dict[str, str], settings: Settings) -> dict[str, str]:
    if len(headers) > settings.max_callback_headers:
        raise InvalidField(
            "json", "headers", f"at most {settings.max_callback_headers} custom headers"
        )
    for name, value in headers.items():
        lowered = name.lower()
        if not HEADER_NAME.match(name):
            raise InvalidField("json", "headers", f"{name!r} is not a valid header name")
        if lowered in FORBIDDEN_HEADERS or lowered.startswith("webhook-"):
            raise InvalidField("json", "headers", f"{name!r} cannot be set on a callback")
        if any(ch in value for ch in "\r\n"):
            raise InvalidField("json", "headers", f"the value of {name!r} has a line break")
        if not HEADER_VALUE.match(value):
            raise InvalidField(
                "json",
                "headers",
                f"the value of {name!r} is not a valid header value (RFC 9110): no control "
                "characters, no leading or trailing space, Latin-1 only",
            )
    if len({name.lower() for name in headers}) != len(headers):
        raise InvalidField("json", "headers", "a header is named twice")
    return dict(headers)


def _unmasked(sent: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """Headers sent back as they were shown: a masked credential keeps its stored value."""
    stored_by_name = {name.lower(): value for name, value in stored.items()}
    return {
        name: stored_by_name[name.lower()]
        if value == MASKED and name.lower() in SENSITIVE_HEADERS and name.lower() in stored_by_name
        else value
        for name, value in sent.items()
    }


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
    url = checked_url(fields["url"], settings)
    _lock_tenants_callbacks(session, tenant)
    count = session.scalar(
        select(func.count()).select_from(Callback).where(Callback.tenant_id == tenant.id)
    )
    if (count or 0) >= settings.max_callbacks_per_tenant:
        raise Conflict(
            f"You have {count} callbacks, the most a tenant may have "
            f"(BOOMERANG_MAX_CALLBACKS_PER_TENANT); delete one first."
        )
    _refuse_duplicate_url(session, tenant, url)
    callback = Callback(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        url=url,
        event_types=list(fields.get("event_types") or events.DEFAULT_EVENT_TYPES),
        channels=list(dict.fromkeys(fields.get("channels") or ())),
        description=fields.get("description"),
        success_status=fields.get("success_status"),
        max_concurrency=fields.get("max_concurrency"),
        rate_limit_per_second=fields.get("rate_limit_per_second"),
        retry_schedule=fields.get("retry_schedule"),
        filter=fields.get("filter"),
        headers=_checked_headers(fields.get("headers") or {}, settings),
        format=pinned_format,
        format_version=pinned_version,
        enabled=True,
        secret=new_signing_secret(),
    )
    session.add(callback)
    session.flush()
    return callback


def _lock_tenants_callbacks(session: Session, tenant: Tenant) -> None:
    # Concurrent registrations of one tenant queue here, so the cap and the one-callback-per-URL
    # rule hold under races.
    session.execute(select(Tenant.id).where(Tenant.id == tenant.id).with_for_update())


def _refuse_duplicate_url(session: Session, tenant: Tenant, url: str) -> None:
    """One callback per URL: two would double every event sent to someone else's site."""
    existing = session.scalar(
        select(Callback.id).where(Callback.tenant_id == tenant.id, Callback.url == url)
    )
    if existing is not None:
        raise InvalidField(
            "json", "url", f"is already registered as callback {existing}; change that one"
        )


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
    if "url" in fields and fields["url"] != callback.url:
        url = checked_url(fields["url"], settings)
        _lock_tenants_callbacks(session, tenant)
        _refuse_duplicate_url(session, tenant, url)
        callback.url = url
    if "event_types" in fields:
        callback.event_types = list(fields["event_types"])
    if "channels" in fields:
        callback.channels = list(dict.fromkeys(fields["channels"] or ()))
    if "headers" in fields:
        callback.headers = _checked_headers(
            _unmasked(fields["headers"] or {}, callback.headers), settings
        )
    for name in (
        "description",
        "success_status",
        "max_concurrency",
        "rate_limit_per_second",
        "retry_schedule",
        "filter",
    ):
        if name in fields:
            setattr(callback, name, fields[name])
    if "enabled" in fields:
        callback.enabled = fields["enabled"]
        callback.disabled_reason = None if callback.enabled else "disabled by the tenant"
    session.flush()
    return callback


def delete_callback(session: Session, tenant: Tenant, callback_id: uuid.UUID) -> Callback:
    """Delete the callback and cancel what was still waiting to reach it; the log stays. The
    deleted row is returned, for saying which it was."""
    callback = get_callback(session, tenant, callback_id)
    # The callback first, then its deliveries: the order a worker recording attempts to it takes
    # them in (workers/delivery/store.py), so the two queue rather than deadlock.
    session.refresh(callback, with_for_update=True)
    session.execute(
        update(Delivery)
        .where(Delivery.callback_id == callback.id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.CANCELLED, next_attempt_at=None)
    )
    session.delete(callback)
    session.flush()
    return callback


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


def retry_schedule_of(callback: Callback | None, settings: Settings) -> tuple[int, ...]:
    """The delays between a callback's retries: its own, or the service's."""
    if callback is not None and callback.retry_schedule is not None:
        return tuple(callback.retry_schedule)
    return settings.retry_schedule


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
                attempt_count=len(retry_schedule_of(callback, settings)),
                next_attempt_at=now,
            )
            .returning(Delivery.id)
        )
    )
    if ids:
        wake_deliveries(session)
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
    (made,) = outbox.publish(
        session,
        tenant_id=tenant.id,
        event_type=events.CALLBACK_TEST,
        data=data,
        now=now,
        callbacks=[callback],
    )
    return session.get_one(Delivery, made.id)
