"""How much delivery work is waiting, read from Postgres for the metrics gauges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.models import Callback, Delivery, DeliveryStatus


@dataclass(frozen=True)
class Backlog:
    """Pending deliveries by state, and callbacks that are failing or disabled."""

    due: int  # due now and held by no worker: work the delivery workers have not reached yet
    leased: int  # held by a worker right now: in flight
    waiting: int  # scheduled for later: retries waiting out their delay
    oldest_due_seconds: float  # how long the longest-due one has been due; 0 with none due
    failing_callbacks: int  # enabled, with a run of failed attempts and no success since
    disabled_callbacks: int


def read_backlog(session: Session, now: datetime) -> Backlog:
    """One query. The delivery counts walk only pending rows, through the partial index the
    workers claim with (``ix_delivery_due``); callbacks are few next to deliveries."""
    leased = and_(Delivery.locked_until.is_not(None), Delivery.locked_until >= now)
    free = or_(Delivery.locked_until.is_(None), Delivery.locked_until < now)
    due = and_(Delivery.next_attempt_at <= now, free)
    failing = (
        select(func.count())
        .where(Callback.enabled, Callback.failing_since.is_not(None))
        .scalar_subquery()
    )
    disabled = select(func.count()).where(~Callback.enabled).scalar_subquery()
    row = session.execute(
        select(
            func.count().filter(due),
            func.count().filter(leased),
            func.count().filter(and_(Delivery.next_attempt_at > now, free)),
            func.min(Delivery.next_attempt_at).filter(due),
            failing,
            disabled,
        )
        # Parked deliveries (no due time yet) are counted in none of these, and are not in the
        # index.
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at.is_not(None))
    ).one()
    due_count, leased_count, waiting_count, oldest_due, failing_count, disabled_count = row
    return Backlog(
        due=due_count,
        leased=leased_count,
        waiting=waiting_count,
        oldest_due_seconds=(now - oldest_due).total_seconds() if oldest_due else 0.0,
        failing_callbacks=failing_count,
        disabled_callbacks=disabled_count,
    )
