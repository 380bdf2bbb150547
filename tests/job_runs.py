"""One job at a time, through the same steps a job drain takes; for tests only."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.clock import utcnow
from config.settings import Settings
from workers.running import claim_next_job, finish_job, run_claimed


def execute_job(session: Session, settings: Settings, job_id: uuid.UUID) -> bool | None:
    """Claim this queued job, run it and record its outcome: True or False for how it ended,
    None if it was not there to take (held by a live lease, finished) or its lease was lost."""
    claimed, _ = claim_next_job(session, utcnow(), settings, only=job_id)
    session.commit()
    if claimed is None:
        return None
    outcome = run_claimed(session, settings, claimed)
    if outcome is None:
        return None
    recorded = finish_job(session, claimed, utcnow(), outcome)
    session.commit()
    return outcome.succeeded if recorded else None
