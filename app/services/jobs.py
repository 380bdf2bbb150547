"""Jobs: submit, read, and the worker's side of running one (claim, progress, finish)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, false, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import metrics
from app.db import enqueue_after_commit
from app.errors import Conflict, InvalidField, NotFound
from app.models import Callback, Job, JobStatus, Tenant
from app.schemas import JobSchema
from app.services import events
from app.services.callbacks import _checked_url
from config.settings import Settings

RUN_JOB_TASK = "boomerang.run_job"
JOBS_QUEUE = "jobs"


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool


def fingerprint(body: dict[str, Any]) -> str:
    """A stable hash of a submission, to tell a retry from a different request with the same key."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _check_redirect_url(session: Session, tenant: Tenant, redirect_url: str) -> None:
    # No open redirects: the target must be on a site the tenant already proved it owns.
    target = urlsplit(redirect_url)
    origins = {
        (urlsplit(url).scheme, urlsplit(url).netloc.lower())
        for url in session.scalars(select(Callback.url).where(Callback.tenant_id == tenant.id))
    }
    if (target.scheme, target.netloc.lower()) not in origins:
        raise InvalidField(
            "json", "redirect_url", "must share its origin with one of your registered callbacks"
        )


def submit_job(
    session: Session,
    tenant: Tenant,
    body: dict[str, Any],
    settings: Settings,
    now: datetime,
    idempotency_key: str | None = None,
) -> Submission:
    """Store a queued job, enqueued after commit; a repeated idempotency key returns the first."""
    if body.get("callback_url"):
        _checked_url(body["callback_url"], settings, field="callback_url")
    if body.get("redirect_url"):
        _check_redirect_url(session, tenant, body["redirect_url"])
    request_fingerprint = fingerprint(body)
    if idempotency_key is not None:
        existing = _find_by_idempotency_key(session, tenant, idempotency_key, now, settings)
        if existing is not None:
            return _replay(existing, request_fingerprint)

    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        type=body["type"],
        status=JobStatus.QUEUED,
        input=body.get("input") or {},
        callback_url=body.get("callback_url"),
        redirect_url=body.get("redirect_url"),
        redirect_token=secrets.token_urlsafe(32) if body.get("redirect_url") else None,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
        attempts=0,
        max_attempts=settings.job_max_attempts,
        enqueued_at=now,
        created_at=now,
    )
    try:
        # A savepoint, so losing a race on the idempotency key leaves the outer transaction usable.
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        existing = _find_by_idempotency_key(session, tenant, idempotency_key, now, settings)
        if existing is None:
            raise
        return _replay(existing, request_fingerprint)
    enqueue_after_commit(session, RUN_JOB_TASK, str(job.id), queue=JOBS_QUEUE)
    metrics.after_commit(session, metrics.job_submitted, job.type)
    return Submission(job=job, created=True)


def _find_by_idempotency_key(
    session: Session, tenant: Tenant, key: str | None, now: datetime, settings: Settings
) -> Job | None:
    job = session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == key))
    if job is not None and job.created_at < now - timedelta(
        seconds=settings.idempotency_ttl_seconds
    ):
        job.idempotency_key = None  # expired: free the key for this new request
        session.flush()
        return None
    return job


def _replay(job: Job, request_fingerprint: str) -> Submission:
    if job.request_fingerprint != request_fingerprint:
        raise Conflict("This Idempotency-Key was used with a different request body.")
    return Submission(job=job, created=False)


def get_job(session: Session, tenant: Tenant, job_id: uuid.UUID) -> Job:
    """One of the tenant's jobs, or 404."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id))
    if job is None:
        raise NotFound("No such job.")
    return job


def encode_cursor(job: Job) -> str:
    """An opaque cursor pointing just past ``job`` in newest-first order."""
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Undo ``encode_cursor``; a tampered cursor is a 422 on ``cursor``."""
    try:
        created, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError):
        from marshmallow import ValidationError

        raise ValidationError("not a cursor this API returned") from None


def list_jobs(
    session: Session,
    tenant: Tenant,
    *,
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page."""
    query = select(Job).where(Job.tenant_id == tenant.id)
    if status:
        query = query.where(Job.status == JobStatus(status))
    if job_type:
        query = query.where(Job.type == job_type)
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def get_job_by_redirect_token(session: Session, token: str) -> Job | None:
    """The job behind a public redirect link."""
    return session.scalar(select(Job).where(Job.redirect_token == token))


# The worker's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    type: str
    input: dict[str, Any]
    lease_id: uuid.UUID
    attempt: int


def claim_job(
    session: Session, job_id: uuid.UUID, now: datetime, settings: Settings
) -> ClaimedJob | None:
    """Take a queued job, or one whose worker's lease ran out; None if someone else has it."""
    lease_id = uuid.uuid4()
    row = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts < Job.max_attempts,
            or_(
                Job.status == JobStatus.QUEUED,
                and_(Job.status == JobStatus.RUNNING, Job.locked_until < now),
            ),
        )
        .values(
            status=JobStatus.RUNNING,
            attempts=Job.attempts + 1,
            lease_id=lease_id,
            locked_until=now + timedelta(seconds=settings.job_lease_seconds),
            started_at=now,
        )
        .returning(Job.id, Job.type, Job.input, Job.attempts)
    ).one_or_none()
    if row is None:
        _fail_if_out_of_attempts(session, job_id, now)
        return None
    return ClaimedJob(
        id=row.id, type=row.type, input=row.input, lease_id=lease_id, attempt=row.attempts
    )


def _fail_if_out_of_attempts(session: Session, job_id: uuid.UUID, now: datetime) -> None:
    # A job whose worker died on every attempt still ends, and still sends job.failed.
    job = session.scalar(
        select(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.RUNNING,
            Job.locked_until < now,
            Job.attempts >= Job.max_attempts,
        )
        .with_for_update(skip_locked=True)
    )
    if job is not None:
        _finish(
            session,
            job,
            now,
            error=(f"the worker running this job stopped {job.attempts} times; giving up"),
        )


def record_progress(
    session: Session,
    claimed: ClaimedJob,
    progress: dict[str, Any],
    now: datetime,
    settings: Settings,
) -> bool:
    """Store progress, extend the lease and raise ``job.progress``; False if the lease is lost."""
    job = session.scalar(
        select(Job)
        .where(Job.id == claimed.id, Job.lease_id == claimed.lease_id)
        .with_for_update()  # so a takeover cannot land between this read and the write
    )
    if job is None or job.status != JobStatus.RUNNING:
        return False
    job.progress = progress
    job.locked_until = now + timedelta(seconds=settings.job_lease_seconds)
    callbacks = events.subscribed_callbacks(session, job.tenant_id, events.JOB_PROGRESS)
    if callbacks:
        events.publish(
            session,
            tenant_id=job.tenant_id,
            event_type=events.JOB_PROGRESS,
            data=JobSchema().dump(job),
            now=now,
            job_id=job.id,
            callbacks=callbacks,
        )
    session.flush()
    return True


def finish_job(
    session: Session,
    claimed: ClaimedJob,
    now: datetime,
    *,
    result: Any = None,
    error: str | None = None,
) -> bool:
    """Record the outcome and, in the same transaction, the events it raises (the outbox)."""
    job = session.scalar(
        select(Job).where(Job.id == claimed.id, Job.lease_id == claimed.lease_id).with_for_update()
    )
    if job is None or job.status != JobStatus.RUNNING:
        return False  # the lease expired and another worker owns the job now
    _finish(session, job, now, result=result, error=error)
    return True


def _finish(
    session: Session, job: Job, now: datetime, *, result: Any = None, error: str | None = None
) -> None:
    job.status = JobStatus.FAILED if error is not None else JobStatus.SUCCEEDED
    job.result = result if error is None else None
    job.error = error
    job.finished_at = now
    job.locked_until = None
    job.lease_id = None
    session.flush()
    duration = (now - job.started_at).total_seconds() if job.started_at else None
    metrics.after_commit(session, metrics.job_finished, job.type, job.status.value, duration)
    event_type = events.JOB_FAILED if error is not None else events.JOB_SUCCEEDED
    events.publish(
        session,
        tenant_id=job.tenant_id,
        event_type=event_type,
        data=JobSchema().dump(job),
        now=now,
        job_id=job.id,
        callbacks=events.subscribed_callbacks(session, job.tenant_id, event_type),
        extra_urls=[job.callback_url] if job.callback_url else [],
    )


def due_job_ids(
    session: Session, now: datetime, settings: Settings, requeue_waiting: bool = True
) -> list[uuid.UUID]:
    """Jobs to enqueue again: running ones past their lease and -- only when ``requeue_waiting``
    (the broker queue was seen empty) -- queued ones whose message may be lost."""
    stale = now - timedelta(seconds=settings.requeue_after_seconds)
    waiting_too_long = Job.enqueued_at < stale if requeue_waiting else false()
    ids = list(
        session.scalars(
            select(Job.id)
            .where(
                or_(
                    and_(
                        Job.status == JobStatus.QUEUED,
                        or_(Job.enqueued_at.is_(None), waiting_too_long),
                    ),
                    and_(
                        Job.status == JobStatus.RUNNING,
                        Job.locked_until < now,
                        or_(
                            Job.enqueued_at.is_(None),
                            Job.enqueued_at < Job.locked_until,
                            waiting_too_long,
                        ),
                    ),
                )
            )
            .order_by(Job.created_at)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(update(Job).where(Job.id.in_(ids)).values(enqueued_at=now))
        for job_id in ids:
            enqueue_after_commit(session, RUN_JOB_TASK, str(job_id), queue=JOBS_QUEUE)
    return ids
