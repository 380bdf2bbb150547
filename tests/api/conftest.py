"""Helpers for the API tests: job shortcuts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from app.models import Delivery, Message
from tests.job_runs import execute_job


def submit_job(client: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    """POST /v1/jobs and return the accepted job, failing the test on anything but 202."""
    response = client.post("/v1/jobs", json={"type": "echo", **body}, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def run_job(db_session: Any, settings: Any, job_id: str) -> bool | None:
    """Run the job once, as a worker would, in the test's session."""
    return execute_job(db_session, settings, uuid.UUID(job_id))


def delivery_ids_of(db_session: Any, job_id: str) -> list[uuid.UUID]:
    """The ids of every delivery the job's events made, oldest first."""
    return list(
        db_session.scalars(
            select(Delivery.id)
            .join(Message)
            .where(Message.job_id == uuid.UUID(job_id))
            .order_by(Delivery.created_at, Delivery.id)
        )
    )
