"""Turn an event into a message and one pending delivery per destination (the outbox).

Called inside the transaction that changes the state the event reports, so the event exists if
and only if the change does. The deliveries are enqueued after that transaction commits.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import any_, literal, select
from sqlalchemy.orm import Session

from app.db import enqueue_after_commit
from app.models import Callback, Delivery, DeliveryStatus, Message

JOB_SUCCEEDED = "job.succeeded"
JOB_FAILED = "job.failed"
JOB_PROGRESS = "job.progress"
CALLBACK_TEST = "callback.test"
CALLBACK_DISABLED = "callback.disabled"
CALLBACK_FAILING = "callback.failing"
CALLBACK_RECOVERED = "callback.recovered"

# What a callback may subscribe to, and what it gets when it names nothing.
SUBSCRIBABLE_EVENT_TYPES = (
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_PROGRESS,
    CALLBACK_DISABLED,
    CALLBACK_FAILING,
    CALLBACK_RECOVERED,
)
DEFAULT_EVENT_TYPES = (JOB_SUCCEEDED, JOB_FAILED)
# Ad-hoc callback URLs given on a job hear only how it ended.
FINAL_EVENT_TYPES = (JOB_SUCCEEDED, JOB_FAILED)

DELIVER_TASK = "boomerang.deliver"
DELIVERIES_QUEUE = "deliveries"


def wake_deliveries(session: Session) -> None:
    """Once this transaction commits, wake a delivery worker to drain what it made due."""
    enqueue_after_commit(session, DELIVER_TASK, queue=DELIVERIES_QUEUE)


def webhook_id(message_id: uuid.UUID) -> str:
    """The ``webhook-id`` header value: stable for a message across retries and destinations."""
    return f"msg_{message_id.hex}"


def render_body(event_type: str, data: Any, now: datetime) -> str:
    """The Standard Webhooks envelope, serialised once so every retry sends the same bytes."""
    envelope = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    return json.dumps(envelope, separators=(",", ":"), default=str)


def subscribed_callbacks(session: Session, tenant_id: uuid.UUID, event_type: str) -> list[Callback]:
    """The tenant's enabled callbacks that listen for ``event_type``."""
    return list(
        session.scalars(
            select(Callback)
            .where(
                Callback.tenant_id == tenant_id,
                Callback.enabled.is_(True),
                literal(event_type) == any_(Callback.event_types),
            )
            .order_by(Callback.created_at)
        )
    )


def publish(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    event_type: str,
    data: Any,
    now: datetime,
    job_id: uuid.UUID | None = None,
    callbacks: Iterable[Callback] = (),
    extra_urls: Iterable[str] = (),
) -> list[Delivery]:
    """Store one message and a pending delivery for each callback and extra URL."""
    message = Message(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        job_id=job_id,
        event_type=event_type,
        body=render_body(event_type, data, now),
    )
    session.add(message)
    deliveries = [
        Delivery(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            message_id=message.id,
            callback_id=callback.id,
            url=callback.url,
        )
        for callback in callbacks
    ]
    deliveries += [
        Delivery(id=uuid.uuid4(), tenant_id=tenant_id, message_id=message.id, url=url)
        for url in extra_urls
    ]
    for delivery in deliveries:
        delivery.status = DeliveryStatus.PENDING
        delivery.attempt_count = 0
        delivery.next_attempt_at = now
        session.add(delivery)
    if deliveries:
        wake_deliveries(session)
    session.flush()
    return deliveries
