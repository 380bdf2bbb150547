"""Read-only overviews of one tenant's traffic for the portal: per-callback health over a window,
and counts by status. Every query is scoped to the tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.models import (
    Callback,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Job,
    JobStatus,
    Tenant,
)


@dataclass(frozen=True)
class HourBucket:
    """One hour of attempts to one callback."""

    starts_at: datetime
    attempts: int = 0
    succeeded: int = 0
    p50_ms: float | None = None

    @property
    def failed(self) -> int:
        return self.attempts - self.succeeded


@dataclass(frozen=True)
class CallbackHealth:
    """How one callback fared over the window: totals and one bucket per hour, oldest first."""

    callback: Callback
    buckets: list[HourBucket]
    attempts: int = 0
    succeeded: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def success_rate(self) -> float | None:
        """Succeeded attempts over all attempts; None when there were none."""
        return self.succeeded / self.attempts if self.attempts else None


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def callback_health(
    session: Session, tenant: Tenant, now: datetime, hours: int = 24
) -> list[CallbackHealth]:
    """Each of the tenant's callbacks with its attempts, success rate and latency per hour over the
    last ``hours`` hours (the current, partial hour last)."""
    first_hour = _hour(now) - timedelta(hours=hours - 1)
    callbacks = list(
        session.scalars(
            select(Callback).where(Callback.tenant_id == tenant.id).order_by(Callback.created_at)
        )
    )
    if not callbacks:
        return []
    in_window = and_(
        Delivery.tenant_id == tenant.id,
        Delivery.callback_id.is_not(None),
        DeliveryAttempt.attempted_at >= first_hour,
    )
    # Hours are UTC hours whatever the database session's time zone (some zones are offset by
    # half an hour).
    hour = func.date_trunc("hour", func.timezone("UTC", DeliveryAttempt.attempted_at))
    per_hour = session.execute(
        select(
            Delivery.callback_id,
            hour.label("hour"),
            func.count(),
            func.count().filter(DeliveryAttempt.succeeded),
            func.percentile_cont(0.5).within_group(DeliveryAttempt.duration_ms),
        )
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(in_window)
        .group_by(Delivery.callback_id, hour)
    ).all()
    totals = {
        row[0]: row[1:]
        for row in session.execute(
            select(
                Delivery.callback_id,
                func.count(),
                func.count().filter(DeliveryAttempt.succeeded),
                func.percentile_cont(0.5).within_group(DeliveryAttempt.duration_ms),
                func.percentile_cont(0.95).within_group(DeliveryAttempt.duration_ms),
            )
            .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .where(in_window)
            .group_by(Delivery.callback_id)
        )
    }
    buckets: dict[tuple[uuid.UUID, datetime], HourBucket] = {}
    for callback_id, starts_at, attempts, succeeded, p50 in per_hour:
        key = (callback_id, starts_at.replace(tzinfo=UTC))
        buckets[key] = HourBucket(key[1], attempts, succeeded, p50)
    hours_in_window = [first_hour + timedelta(hours=n) for n in range(hours)]
    health = []
    for callback in callbacks:
        attempts, succeeded, p50, p95 = totals.get(callback.id, (0, 0, None, None))
        health.append(
            CallbackHealth(
                callback=callback,
                buckets=[buckets.get((callback.id, h), HourBucket(h)) for h in hours_in_window],
                attempts=attempts,
                succeeded=succeeded,
                p50_ms=p50,
                p95_ms=p95,
            )
        )
    return health


@dataclass(frozen=True)
class StatusCounts:
    """How many of the tenant's jobs and deliveries created since ``since`` are in each status
    (every status present, zeros included, in lifecycle order)."""

    since: datetime
    jobs: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)


def status_counts(session: Session, tenant: Tenant, since: datetime) -> StatusCounts:
    """Jobs and deliveries created since ``since``, counted by status."""
    return StatusCounts(
        since=since,
        jobs=_count_by_status(session, Job, JobStatus, tenant, since),
        deliveries=_count_by_status(session, Delivery, DeliveryStatus, tenant, since),
    )


def _count_by_status(
    session: Session,
    model: type[Job] | type[Delivery],
    statuses: type[JobStatus] | type[DeliveryStatus],
    tenant: Tenant,
    since: datetime,
) -> dict[str, int]:
    counts = dict.fromkeys((status.value for status in statuses), 0)
    for status, count in session.execute(
        select(model.status, func.count())
        .where(model.tenant_id == tenant.id, model.created_at >= since)
        .group_by(model.status)
    ):
        counts[statuses(status).value] = count
    return counts
