"""Test data builders. They flush, never commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from app.events import DEFAULT_EVENT_TYPES
from app.models import Callback, Delivery, Job, JobStatus, Tenant
from app.services import outbox
from app.services.tenants import create_tenant, issue_api_key
from app.signing import new_signing_secret
from workers.delivery.store import ClaimedDelivery


class TenantWithKey(NamedTuple):
    """A tenant made for a test: its row and its first API key, in full."""

    row: Tenant
    api_key: str


def make_tenant(session: Session, name: str = "acme") -> TenantWithKey:
    new = create_tenant(session, name)
    return TenantWithKey(new.tenant, new.api_key)


def make_api_key(session: Session, tenant: Tenant) -> str:
    """Another API key for ``tenant``, in full."""
    return issue_api_key(session, tenant).api_key


def make_callback(session: Session, tenant: Tenant, url: str, **fields: Any) -> Callback:
    callback = Callback(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        url=url,
        event_types=list(fields.pop("event_types", DEFAULT_EVENT_TYPES)),
        enabled=fields.pop("enabled", True),
        secret=new_signing_secret(),
        **fields,
    )
    session.add(callback)
    session.flush()
    return callback


def make_job(
    session: Session,
    tenant: Tenant,
    job_type: str = "echo",
    input: dict[str, Any] | None = None,
    **fields: Any,
) -> Job:
    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        type=job_type,
        status=fields.pop("status", JobStatus.QUEUED),
        input=input or {},
        attempts=fields.pop("attempts", 0),
        max_attempts=fields.pop("max_attempts", 3),
        **fields,
    )
    session.add(job)
    session.flush()
    return job


def make_delivery(
    session: Session,
    callback: Callback,
    now: datetime | None = None,
    job_id: uuid.UUID | None = None,
    event_type: str = "job.succeeded",
) -> Delivery:
    """A pending delivery of a new event to ``callback``, made as the outbox makes them."""
    (made,) = outbox.publish(
        session,
        tenant_id=callback.tenant_id,
        event_type=event_type,
        data={},
        now=now or datetime.now(UTC),
        job_id=job_id,
        callbacks=[callback],
    )
    return session.get_one(Delivery, made.id)


def claimed_delivery(
    callback_id: uuid.UUID | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
    max_concurrency: int | None = None,
    rate: float | None = None,
) -> ClaimedDelivery:
    """A leased delivery as a claim hands it on, with nothing behind it in Postgres: enough for
    the limits, which read only its callback, tenant and the callback's own limits."""
    return ClaimedDelivery(
        id=uuid.uuid4(),
        lease_id=uuid.uuid4(),
        url="http://receiver.test/hook",
        webhook_id="msg_test",
        body="{}",
        secrets=("whsec_test",),
        callback_id=callback_id or uuid.uuid4(),
        success_status=None,
        attempt_count=0,
        tenant_id=tenant_id,
        max_concurrency=max_concurrency,
        rate_limit_per_second=rate,
    )
