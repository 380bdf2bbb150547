"""Deliveries as tenants see them: read the log, page through it, retry by hand. Sending them is
the delivery pipeline's (``workers/delivery/``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.errors import Conflict, NotFound
from app.models import Delivery, DeliveryStatus, Job, Message, Tenant
from app.paging import newest_first_page
from app.queues import wake_deliveries
from app.services.callbacks import get_callback, retry_schedule_of
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


def list_deliveries(
    session: Session,
    tenant: Tenant,
    *,
    status: DeliveryStatus | None = None,
    callback_id: uuid.UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Delivery], str | None]:
    """A page of the tenant's deliveries, newest first (without attempts), and the next cursor."""
    query = (
        select(Delivery)
        .options(selectinload(Delivery.message))
        .where(Delivery.tenant_id == tenant.id)
    )
    if status is not None:
        query = query.where(Delivery.status == status)
    if callback_id is not None:
        query = query.where(Delivery.callback_id == callback_id)
    return newest_first_page(session, query, Delivery, limit, cursor)


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
    if delivery.status == DeliveryStatus.CANCELLED:
        # Cancelled with its job or callback, or never sent because the callback's filter could
        # not decide on the event (its attempt says which): what was withdrawn stays withdrawn.
        raise Conflict("This delivery was cancelled; it cannot be sent again.")
    if _callback_was_deleted(session, delivery):
        # Sending again would POST to a URL the tenant removed, signed with the tenant's own
        # secret instead of the callback's.
        raise Conflict("This delivery's callback was deleted; it cannot be sent again.")
    callback = None
    if delivery.callback_id is not None:
        callback = get_callback(session, tenant, delivery.callback_id)
    if delivery.status != DeliveryStatus.PENDING:
        delivery.status = DeliveryStatus.PENDING
        # The last slot of the schedule: a failure ends it as failed again, without new retries.
        delivery.attempt_count = len(retry_schedule_of(callback, settings))
    delivery.next_attempt_at = now
    session.flush()
    wake_deliveries(session)
    return delivery
