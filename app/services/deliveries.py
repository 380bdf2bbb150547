"""Deliveries as tenants see them: read the log, page through it, retry by hand. Sending them is
the delivery pipeline's (``workers/delivery/``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, select
from sqlalchemy.orm import Session, selectinload

from app.errors import Conflict, NotFound
from app.events import WILDCARD_SUFFIX
from app.models import Delivery, DeliveryAttempt, DeliveryStatus, Job, Message, Tenant
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


# A response class: the status range an attempt's answer fell in; "none" is no answer at all
# (a timeout, a refused connection, a blocked address).
RESPONSE_CLASSES: dict[str, tuple[int, int] | None] = {
    "2xx": (200, 299),
    "3xx": (300, 399),
    "4xx": (400, 499),
    "5xx": (500, 599),
    "none": None,
}


@dataclass(frozen=True)
class DeliverySearch:
    """What a search of the delivery log asks for. Every field narrows; none is required."""

    callback_id: uuid.UUID | None = None
    status: DeliveryStatus | None = None
    event_type: str | None = None  # a type, or prefix.* for every type under it
    message_id: uuid.UUID | None = None  # what a webhook-id names
    job_id: uuid.UUID | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    response: str | None = None  # some attempt got an answer of this class (RESPONSE_CLASSES)


def search_of(filters: Mapping[str, Any]) -> DeliverySearch:
    """The search a loaded ``DeliveryFilterSchema`` asks for (the API's and the portal's)."""
    webhook = filters.get("webhook_id")
    status = filters.get("status")
    return DeliverySearch(
        callback_id=filters.get("callback_id"),
        status=DeliveryStatus(status) if status else None,
        event_type=filters.get("event_type"),
        message_id=uuid.UUID(webhook.removeprefix("msg_")) if webhook else None,
        job_id=filters.get("job_id"),
        since=filters.get("since"),
        until=filters.get("until"),
        response=filters.get("response"),
    )


def search_statement(tenant_id: uuid.UUID, search: DeliverySearch) -> Select[Delivery]:
    """The tenant's deliveries matching ``search``, unordered. Each filter is one the indexes
    answer (migration 0016): the newest-first walk per tenant or callback, a message's
    deliveries, a job's or a type's messages, an attempt's delivery."""
    query = select(Delivery).where(Delivery.tenant_id == tenant_id)
    if search.callback_id is not None:
        query = query.where(Delivery.callback_id == search.callback_id)
    if search.status is not None:
        query = query.where(Delivery.status == search.status)
    if search.message_id is not None:
        query = query.where(Delivery.message_id == search.message_id)
    if search.since is not None:
        query = query.where(Delivery.created_at >= search.since)
    if search.until is not None:
        query = query.where(Delivery.created_at < search.until)
    if search.job_id is not None or search.event_type is not None:
        messages = select(Message.id).where(Message.tenant_id == tenant_id)
        if search.job_id is not None:
            messages = messages.where(Message.job_id == search.job_id)
        if search.event_type is not None:
            messages = messages.where(_type_matches(search.event_type))
        query = query.where(Delivery.message_id.in_(messages))
    if search.response is not None:
        statuses = RESPONSE_CLASSES[search.response]
        answered = (
            DeliveryAttempt.response_status.is_(None)
            if statuses is None
            else DeliveryAttempt.response_status.between(*statuses)
        )
        query = query.where(exists().where(DeliveryAttempt.delivery_id == Delivery.id, answered))
    return query


def _type_matches(pattern: str) -> ColumnElement[bool]:
    if pattern.endswith(WILDCARD_SUFFIX):
        prefix = pattern.removesuffix("*")  # keeps the dot: invoice.* is invoice.<something>
        return Message.event_type.startswith(prefix, autoescape=True)
    return Message.event_type == pattern


def list_deliveries(
    session: Session,
    tenant: Tenant,
    search: DeliverySearch = DeliverySearch(),
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Delivery], str | None]:
    """A page of the tenant's deliveries matching ``search``, newest first (without attempts),
    and the next page's cursor."""
    query = search_statement(tenant.id, search).options(selectinload(Delivery.message))
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
