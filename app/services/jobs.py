"""Jobs as tenants see them: submit, read, list, and the redirect link. Running one is the
worker's (``workers/running.py``)."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import metrics
from app.db import after_commit
from app.errors import InvalidField, NotFound
from app.jobtypes import get_job_type, job_type_names
from app.models import Job, JobStatus, Tenant
from app.paging import newest_first_page
from app.prepared import PreparedStatement
from app.queues import wake_jobs
from app.services.callbacks import checked_url
from app.services.idempotency import check_same_request, find_by_idempotency_key
from app.services.tenant_settings import check_redirect_url
from app.tracing import current_traceparent
from config.settings import Settings

# Every request runs it: a prepared statement (app/prepared.py), so neither SQLAlchemy nor Postgres
# builds and plans it per request. A lost race on the idempotency key inserts nothing, rather than
# failing the transaction.
_SUBMITTED_COLUMNS = (
    "id",
    "tenant_id",
    "type",
    "status",
    "input",
    "callback_url",
    "redirect_url",
    "redirect_token",
    "idempotency_key",
    "request_fingerprint",
    "traceparent",
    "attempts",
    "max_attempts",
    "enqueued_at",
    "created_at",
)
_INSERT_JOB = PreparedStatement(
    "boomerang_insert_job",
    text(
        f"INSERT INTO job ({', '.join(_SUBMITTED_COLUMNS)})"
        f" VALUES ({', '.join(':' + column for column in _SUBMITTED_COLUMNS)})"
        " ON CONFLICT ON CONSTRAINT uq_job_tenant_idempotency_key DO NOTHING"
        " RETURNING id"
    ),
)


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool


def fingerprint(body: dict[str, Any]) -> str:
    """A stable hash of a submission, to tell a retry from a different request with the same key."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def submit_job(
    session: Session,
    tenant: Tenant,
    body: dict[str, Any],
    settings: Settings,
    now: datetime,
    idempotency_key: str | None = None,
) -> Submission:
    """Store a queued job, enqueued after commit; a repeated idempotency key returns the first."""
    if get_job_type(body["type"]) is None:
        raise InvalidField(
            "json", "type", f"unknown job type; known types: {', '.join(job_type_names())}"
        )
    if body.get("callback_url"):
        checked_url(body["callback_url"], settings, field="callback_url")
    if body.get("redirect_url"):
        check_redirect_url(tenant, body["redirect_url"])
    request_fingerprint = fingerprint(body)
    if idempotency_key is not None:
        existing = find_by_idempotency_key(session, Job, tenant, idempotency_key, now, settings)
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
        # The worker that runs it may be anywhere: the request's trace goes with the row.
        traceparent=current_traceparent(),
        attempts=0,
        max_attempts=settings.job_max_attempts,
        enqueued_at=now,
        created_at=now,
    )
    # Not the unit of work: one statement, and the Job above stays out of the session; it is
    # what the answer shows.
    values = {column: getattr(job, column) for column in _SUBMITTED_COLUMNS}
    values.update(status=job.status.value, input=json.dumps(job.input))
    while _INSERT_JOB.execute(session.connection(), values).scalar() is None:
        # A concurrent request with the same key committed first: answer with its job, unless
        # its key has expired meanwhile (then it is freed and this insert goes ahead).
        existing = find_by_idempotency_key(session, Job, tenant, idempotency_key, now, settings)
        if existing is not None:
            return _replay(existing, request_fingerprint)
    wake_jobs(session)
    after_commit(session, metrics.job_submitted, job.type)
    return Submission(job=job, created=True)


def _replay(job: Job, request_fingerprint: str) -> Submission:
    check_same_request(job, request_fingerprint)
    return Submission(job=job, created=False)


def get_job(session: Session, tenant: Tenant, job_id: uuid.UUID) -> Job:
    """One of the tenant's jobs, or 404."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id))
    if job is None:
        raise NotFound("No such job.")
    return job


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
    return newest_first_page(session, query, Job, limit, cursor)


def get_job_by_redirect_token(session: Session, token: str) -> Job | None:
    """The job behind a public redirect link."""
    return session.scalar(select(Job).where(Job.redirect_token == token))
