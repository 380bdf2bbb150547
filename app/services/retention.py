"""Retention: delete old attempts and finished jobs in small batches."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session

from app.models import Delivery, DeliveryAttempt, DeliveryStatus, Job, JobStatus, Message
from config.settings import Settings


def _has_pending_delivery(message_id_column):
    return exists().where(
        Delivery.message_id == message_id_column, Delivery.status == DeliveryStatus.PENDING
    )


def prune_batch(session: Session, now: datetime, settings: Settings) -> dict[str, int]:
    """Delete at most one batch of each kind of old row; the counts deleted."""
    cutoff = now - timedelta(days=settings.retention_days)
    batch = settings.prune_batch_size
    old_attempts = (
        select(DeliveryAttempt.id).where(DeliveryAttempt.attempted_at < cutoff).limit(batch)
    )
    attempts = session.execute(
        delete(DeliveryAttempt).where(DeliveryAttempt.id.in_(old_attempts))
    ).rowcount
    # A job goes with its messages, deliveries and attempts (ON DELETE CASCADE), unless one of
    # its deliveries is still waiting to be sent.
    old_jobs = (
        select(Job.id)
        .where(
            Job.finished_at < cutoff,
            Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED]),
            ~exists().where(and_(Message.job_id == Job.id, _has_pending_delivery(Message.id))),
        )
        .limit(batch)
    )
    jobs = session.execute(delete(Job).where(Job.id.in_(old_jobs))).rowcount
    # Events not raised by a job: tests and operational events.
    old_messages = (
        select(Message.id)
        .where(
            Message.job_id.is_(None),
            Message.created_at < cutoff,
            ~_has_pending_delivery(Message.id),
        )
        .limit(batch)
    )
    messages = session.execute(delete(Message).where(Message.id.in_(old_messages))).rowcount
    # Idempotency keys outlive their window only as NULLs, so a key can be used again.
    expired_keys = (
        select(Job.id)
        .where(
            Job.idempotency_key.is_not(None),
            Job.created_at < now - timedelta(seconds=settings.idempotency_ttl_seconds),
        )
        .limit(batch)
    )
    keys = session.execute(
        update(Job).where(Job.id.in_(expired_keys)).values(idempotency_key=None)
    ).rowcount
    return {"attempts": attempts, "jobs": jobs, "messages": messages, "idempotency_keys": keys}
