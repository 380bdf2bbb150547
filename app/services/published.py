"""Events a tenant publishes (``invoice.paid``), fanned out to its subscribed callbacks through
the same outbox, deliveries, retries and log as job events. Each is first checked against the
tenant's catalogue (``event_types.py``).

A publisher may give each event an id of its own. The first event with that id is stored; the
same id again with the same type and data is a repeat, answered with the stored message and
storing nothing; with anything else it is a conflict. The check is the unique index on
(tenant, event id): concurrent repeats wait for each other in Postgres, so exactly one stores.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import metrics
from app.db import after_commit
from app.errors import Conflict, InvalidField
from app.events import render_body
from app.models import Delivery, Message, Tenant
from app.services.event_types import check_published
from app.services.ordering import lock_keys
from app.services.outbox import publish
from config.settings import Settings

# A batch is one transaction: big enough for a burst, small enough to answer quickly.
MAX_BATCH = 100


@dataclass(frozen=True)
class Published:
    """One event as stored: its message, whether this request stored it (False: a repeat of an
    id stored before), and how many deliveries it has."""

    message: Message
    created: bool
    deliveries: int


def digest(event_type: str, data: Any, channels: list[str], ordering_key: str | None = None) -> str:
    """What a repeat must match: SHA-256 of the type, data, channels and ordering key (only when
    given, so digests stored before keys existed still match), keys sorted."""
    what: dict[str, Any] = {"type": event_type, "data": data, "channels": sorted(set(channels))}
    if ordering_key is not None:
        what["ordering_key"] = ordering_key
    canonical = json.dumps(what, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def publish_event(
    session: Session, tenant: Tenant, event: dict[str, Any], settings: Settings, now: datetime
) -> Published:
    """Store one event and a pending delivery for each enabled callback subscribed to its type,
    woken for after commit (and counted then, unless it repeated an event id)."""
    published = _publish(session, tenant, event, settings, now)
    after_commit(session, metrics.events_published, int(published.created))
    return published


def _publish(
    session: Session,
    tenant: Tenant,
    event: dict[str, Any],
    settings: Settings,
    now: datetime,
    within: tuple[str, ...] = (),
) -> Published:
    """``publish_event``'s work; ``within`` places the event in errors (``("events", "3")``)."""
    event_type, data, event_id = event["type"], event.get("data"), event.get("id")
    ordering_key = event.get("ordering_key")
    check_published(session, tenant, event_type, data, within)
    size = len(render_body(event_type, data, now, ordering_key).encode())
    if size > settings.max_payload_bytes:
        raise InvalidField(
            "json",
            "data",
            f"the event would be {size} bytes; at most "
            f"{settings.max_payload_bytes} (BOOMERANG_MAX_PAYLOAD_BYTES) can be delivered",
            within,
        )
    message_id = uuid.uuid4()
    channels = list(dict.fromkeys(event.get("channels") or ()))
    request_digest = (
        digest(event_type, data, channels, ordering_key) if event_id is not None else None
    )
    made = publish(
        session,
        tenant_id=tenant.id,
        event_type=event_type,
        data=data,
        now=now,
        subscribers=True,
        message_id=message_id,
        event_id=event_id,
        request_digest=request_digest,
        channels=channels,
        ordering_key=ordering_key,
    )
    if event_id is None:
        return Published(session.get_one(Message, message_id), True, len(made))
    stored = session.scalar(
        select(Message).where(Message.tenant_id == tenant.id, Message.event_id == event_id)
    )
    assert stored is not None  # stored now, or before: the insert stood aside for it
    if stored.id == message_id:
        return Published(stored, True, len(made))
    if stored.request_digest != request_digest:
        raise Conflict(
            f"Event id {event_id!r} was published before with a different type, data, channels "
            "or ordering key."
        )
    deliveries = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.message_id == stored.id)
    )
    return Published(stored, False, deliveries or 0)


def publish_batch(
    session: Session,
    tenant: Tenant,
    events: Sequence[dict[str, Any]],
    settings: Settings,
    now: datetime,
) -> list[Published]:
    """Store every event of a batch in the caller's one transaction, in order."""
    # Every key up front, in one order: two batches sharing keys never wait on each other in a
    # circle (each event's own lock is then already held).
    lock_keys(session, ((tenant.id, e["ordering_key"]) for e in events if e.get("ordering_key")))
    published = [
        _publish(session, tenant, event, settings, now, within=("events", str(number)))
        for number, event in enumerate(events)
    ]
    after_commit(session, metrics.events_published, sum(p.created for p in published))
    return published
