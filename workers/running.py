"""Running a job: claim it, call its function with progress reporting, record the outcome."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.db import commit_with_retry
from app.logs import bind_log_context
from app.services.jobs import claim_job, finish_job, record_progress
from config.settings import Settings
from workers.delivery import utcnow
from workers.jobs import JobContext, get_job_type

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took the job over; this run must stop without recording anything."""


def check_storable(result: Any) -> None:
    """Fail here, readably, on a result Postgres' JSONB would refuse later."""
    text = json.dumps(result, allow_nan=False)  # ValueError for NaN and Infinity
    if "\\u0000" in text:
        raise ValueError("the result contains a NUL character, which cannot be stored")


def execute_job(
    session: Session, settings: Settings, job_id: uuid.UUID, clock: Callable[[], datetime] = utcnow
) -> bool | None:
    """Run the job once. True if it succeeded, False if it failed, None if it was not ours."""
    with bind_log_context(job_id=job_id):
        return _execute_job(session, settings, job_id, clock)


def _execute_job(
    session: Session, settings: Settings, job_id: uuid.UUID, clock: Callable[[], datetime]
) -> bool | None:
    claimed = claim_job(session, job_id, clock(), settings)
    session.commit()
    if claimed is None:
        return None

    def report(progress: dict[str, Any]) -> None:
        if isinstance(progress.get("message"), str):
            progress["message"] = progress["message"].replace("\x00", "\ufffd")
        try:
            still_ours = record_progress(session, claimed, progress, clock(), settings)
        except Exception:
            session.rollback()  # leave the session usable for finish_job
            raise
        if not still_ours:
            session.rollback()
            raise LeaseLost
        session.commit()

    result: Any = None
    error: str | None = None
    job_type = get_job_type(claimed.type)
    try:
        if job_type is None:
            raise LookupError(f"no job type {claimed.type!r} is registered on this worker")
        result = job_type.function(dict(claimed.input), JobContext(str(claimed.id), report))
        check_storable(result)
    except LeaseLost:
        log.warning("job %s: lease lost, leaving it to the worker that took over", claimed.id)
        return None
    except Exception as exc:
        log.info("job %s failed: %s", claimed.id, exc)
        error = f"{type(exc).__name__}: {exc}".replace("\x00", "\ufffd")
        result = None
    # The work is done; keep trying to record it rather than run it again after an outage.
    finished = commit_with_retry(
        session,
        lambda: finish_job(session, claimed, clock(), result=result, error=error),
        give_up_after_seconds=settings.job_lease_seconds / 2,
    )
    return (error is None) if finished else None
