"""Retention: delete finished jobs, stray old attempts and spent portal sessions in batches."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.orm import Session

from app.models import (
    Delivery,
    DeliveryStatus,
    Job,
    JobStatus,
    Message,
    PortalSession,
)
from app.services.attempt_partitions import prune_default_batch, retention_cutoff
from config.settings import Settings


def _rowcount(result: Result[Any]) -> int:
    # DML results are CursorResults, which carry the number of rows affected.
    return cast(CursorResult[Any], result).rowcount


def _has_pending_delivery(message_id_column):
    return exists().where(
        Delivery.message_id == message_id_column, Delivery.status == DeliveryStatus.PENDING
    )


def prune_batch(session: Session, now: datetime, settings: Settings) -> dict[str, int]:
    """Delete at most one batch of each kind of old row; the counts deleted."""
    cutoff = retention_cutoff(now, settings.retention_days)
    batch = settings.prune_batch_size
    # Whole days of attempts go by dropping their partitions (app/services/attempt_partitions.py);
    # only what fell into the DEFAULT partition is deleted row by row.
    attempts = prune_default_batch(session, cutoff, batch)
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
    jobs = _rowcount(session.execute(delete(Job).where(Job.id.in_(old_jobs))))
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
    messages = _rowcount(session.execute(delete(Message).where(Message.id.in_(old_messages))))
    # Idempotency keys outlive their window only as NULLs, so a key can be used again.
    expired_keys = (
        select(Job.id)
        .where(
            Job.idempotency_key.is_not(None),
            Job.created_at < now - timedelta(seconds=settings.idempotency_ttl_seconds),
        )
        .limit(batch)
    )
    keys = _rowcount(
        session.execute(update(Job).where(Job.id.in_(expired_keys)).values(idempotency_key=None))
    )
    # Portal sessions past their lifetime (signed out or not) are of no use to anyone.
    old_sessions = (
        select(PortalSession.id)
        .where(PortalSession.created_at < now - timedelta(seconds=settings.portal_session_seconds))
        .limit(batch)
    )
    sessions = _rowcount(
        session.execute(delete(PortalSession).where(PortalSession.id.in_(old_sessions)))
    )
    return {
        "attempts": attempts,
        "jobs": jobs,
        "messages": messages,
        "idempotency_keys": keys,
        "portal_sessions": sessions,
    }
