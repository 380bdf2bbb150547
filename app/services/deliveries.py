"""Deliveries: read the log, retry by hand, and the worker's claim-and-record cycle."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, joinedload, selectinload

from app.db import enqueue_after_commit
from app.errors import Conflict, NotFound
from app.models import Delivery, DeliveryAttempt, DeliveryStatus, Job, Message, Tenant
from app.services.callbacks import (
    disable_callback,
    get_callback,
    note_attempt_outcome,
    signing_secrets,
)
from app.services.events import CALLBACK_TEST, DELIVER_TASK, DELIVERIES_QUEUE, webhook_id
from config.settings import Settings


def _with_log():
    return (selectinload(Delivery.attempts), selectinload(Delivery.message))


def get_delivery(session: Session, tenant: Tenant, delivery_id: uuid.UUID) -> Delivery:
    """One of the tenant's deliveries with its attempts, or 404."""
    delivery = session.scalar(
        select(Delivery)
        .options(*_with_log())
        .where(Delivery.id == delivery_id, Delivery.tenant_id == tenant.id)
    )
    if delivery is None:
        raise NotFound("No such delivery.")
    return delivery


def list_job_deliveries(session: Session, tenant: Tenant, job_id: uuid.UUID) -> list[Delivery]:
    """Every delivery of every event the job raised, oldest first."""
    return list(
        session.scalars(
            select(Delivery)
            .options(*_with_log())
            .join(Message)
            .where(Message.job_id == job_id, Delivery.tenant_id == tenant.id)
            .order_by(Delivery.created_at, Delivery.id)
        )
    )


def _callback_was_deleted(session: Session, delivery: Delivery) -> bool:
    # Deleting a callback leaves callback_id NULL on its deliveries, like an ad-hoc URL has. An
    # ad-hoc delivery is one to the URL its job was submitted with.
    if delivery.callback_id is not None:
        return False
    job_id = delivery.message.job_id
    callback_url = (
        session.scalar(select(Job.callback_url).where(Job.id == job_id)) if job_id else None
    )
    return callback_url != delivery.url


def retry_delivery(
    session: Session, tenant: Tenant, delivery_id: uuid.UUID, now: datetime, settings: Settings
) -> Delivery:
    """Send again now: one more attempt if it had ended; a pending one skips its wait."""
    delivery = get_delivery(session, tenant, delivery_id)
    if delivery.status == DeliveryStatus.CANCELLED or _callback_was_deleted(session, delivery):
        # Sending again would POST to a URL the tenant removed, signed with the tenant's own
        # secret instead of the callback's.
        raise Conflict("This delivery's callback was deleted; it cannot be sent again.")
    if delivery.callback_id is not None:
        get_callback(session, tenant, delivery.callback_id)
    if delivery.status != DeliveryStatus.PENDING:
        delivery.status = DeliveryStatus.PENDING
        # The last slot of the schedule: a failure ends it as failed again, without new retries.
        delivery.attempt_count = len(settings.retry_schedule)
    delivery.next_attempt_at = now
    delivery.enqueued_at = now
    session.flush()
    enqueue_after_commit(session, DELIVER_TASK, str(delivery.id), queue=DELIVERIES_QUEUE)
    return delivery


# The worker's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """Everything needed to send, read inside the claim so no transaction spans the HTTP call."""

    id: uuid.UUID
    lease_id: uuid.UUID
    url: str
    webhook_id: str
    body: str
    secrets: tuple[str, ...]
    callback_id: uuid.UUID | None
    success_status: int | None
    attempt_count: int
    headers: dict[str, str] = field(default_factory=dict)
    # Whether the callback was in a failure streak when claimed: a success then has one to end.
    callback_failing: bool = True


def claim_delivery(
    session: Session, delivery_id: uuid.UUID, now: datetime, settings: Settings
) -> ClaimedDelivery | None:
    """Lease a due delivery; None when it is not due, not pending, or another worker holds it."""
    lease_id = uuid.uuid4()
    claimed = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.next_attempt_at <= now,
            or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
        )
        .values(
            lease_id=lease_id, locked_until=now + timedelta(seconds=settings.delivery_lease_seconds)
        )
        .returning(Delivery.id)
    ).scalar_one_or_none()
    if claimed is None:
        return None
    # One round trip for the delivery, its message and its callback: this runs per attempt.
    delivery = session.scalar(
        select(Delivery)
        .options(joinedload(Delivery.message), joinedload(Delivery.callback))
        .where(Delivery.id == delivery_id)
        .execution_options(populate_existing=True)
    )
    assert delivery is not None
    callback = delivery.callback
    stopped = delivery.callback_id is not None and (
        callback is None or (not callback.enabled and delivery.message.event_type != CALLBACK_TEST)
    )
    if stopped:
        # Deleted: nothing left to send to. Disabled: failed, so a recover can send it later.
        delivery.status = DeliveryStatus.CANCELLED if callback is None else DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        delivery.locked_until = None
        delivery.lease_id = None
        session.flush()
        return None
    secrets = (
        signing_secrets(callback, now)
        if callback is not None
        else [_tenant_secret(session, delivery.tenant_id)]
    )
    return ClaimedDelivery(
        id=delivery.id,
        lease_id=lease_id,
        url=delivery.url,
        webhook_id=webhook_id(delivery.message_id),
        body=delivery.message.body,
        secrets=tuple(secrets),
        callback_id=delivery.callback_id,
        success_status=callback.success_status if callback is not None else None,
        attempt_count=delivery.attempt_count,
        headers=dict(callback.headers) if callback is not None else {},
        callback_failing=callback is not None and callback.consecutive_failures > 0,
    )


def _tenant_secret(session: Session, tenant_id: uuid.UUID) -> str:
    return session.scalar(select(Tenant.signing_secret).where(Tenant.id == tenant_id)) or ""


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt's outcome, as the delivery pipeline classified it."""

    attempted_at: datetime
    request_headers: dict[str, str]
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    response_body_truncated: bool
    duration_ms: int
    succeeded: bool
    error: str | None
    next_attempt_at: datetime | None  # None with a failure: no retries left
    disable_callback_reason: str | None = None


def record_attempt(
    session: Session, claimed: ClaimedDelivery, record: AttemptRecord, settings: Settings
) -> None:
    """Log the attempt and move the delivery on, if this worker still holds its lease."""
    values: dict[str, object] = {
        "attempt_count": Delivery.attempt_count + 1,
        "last_attempt_at": record.attempted_at,
        "locked_until": None,
        "lease_id": None,
    }
    if record.succeeded:
        values.update(
            status=DeliveryStatus.SUCCEEDED, succeeded_at=record.attempted_at, next_attempt_at=None
        )
    elif record.next_attempt_at is None:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        values.update(next_attempt_at=record.next_attempt_at)
    # The lease check keeps a worker that overran its lease from undoing a newer attempt's result.
    still_ours = session.execute(
        update(Delivery)
        .where(Delivery.id == claimed.id, Delivery.lease_id == claimed.lease_id)
        .values(**values)
        .returning(Delivery.id)
    ).scalar_one_or_none()
    if (
        still_ours is None
        and session.scalar(select(Delivery.id).where(Delivery.id == claimed.id)) is None
    ):
        return  # deleted with its tenant while we were sending: nothing left to log against
    # The attempt happened, so it is logged even when another worker holds the delivery now.
    session.add(
        DeliveryAttempt(
            delivery_id=claimed.id,
            attempted_at=record.attempted_at,
            request_headers=record.request_headers,
            response_status=record.response_status,
            response_headers=record.response_headers,
            response_body=record.response_body,
            response_body_truncated=record.response_body_truncated,
            duration_ms=record.duration_ms,
            succeeded=record.succeeded,
            error=record.error,
        )
    )
    if still_ours is not None and claimed.callback_id is not None:
        if record.disable_callback_reason:
            disable_callback(
                session, claimed.callback_id, record.disable_callback_reason, record.attempted_at
            )
        elif not record.succeeded or claimed.callback_failing:
            note_attempt_outcome(
                session, claimed.callback_id, record.succeeded, record.attempted_at, settings
            )
    session.flush()


def due_delivery_ids(
    session: Session, now: datetime, settings: Settings, requeue_waiting: bool = True
) -> list[uuid.UUID]:
    """Claim the right to enqueue due deliveries nobody holds or has recently enqueued.

    Enqueued again: retries that came due, deliveries whose worker's lease ran out, and -- only
    when ``requeue_waiting`` (the caller saw the broker queue empty) -- ones enqueued more than
    ``requeue_after_seconds`` ago, whose message was presumably lost. While a backlog is queued,
    a long wait is just the queue, and enqueueing again would only lengthen it.
    """
    stale = now - timedelta(seconds=settings.requeue_after_seconds)
    waiting_too_long = [Delivery.enqueued_at < stale] if requeue_waiting else []
    ids = list(
        session.scalars(
            select(Delivery.id)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= now,
                or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
                or_(
                    Delivery.enqueued_at.is_(None),
                    Delivery.enqueued_at < Delivery.next_attempt_at,
                    Delivery.enqueued_at < Delivery.locked_until,
                    *waiting_too_long,
                ),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(enqueued_at=now))
        for delivery_id in ids:
            enqueue_after_commit(session, DELIVER_TASK, str(delivery_id), queue=DELIVERIES_QUEUE)
    return ids
