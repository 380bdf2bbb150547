"""Thin Celery tasks: take ids, call the pipeline with a fresh session, let it commit."""

from __future__ import annotations

import uuid

from celery import shared_task

from app.services.deliveries import due_delivery_ids
from app.services.jobs import due_job_ids
from workers.delivery import deliver as deliver_once
from workers.delivery import utcnow
from workers.running import execute_job


@shared_task(name="boomerang.run_job", bind=True)
def run_job(self, job_id: str) -> None:
    """Run one job to its end and raise its events."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        execute_job(session, ctx.settings, uuid.UUID(job_id))


@shared_task(name="boomerang.deliver", bind=True)
def deliver(self, delivery_id: str) -> None:
    """Make one attempt at one delivery."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        deliver_once(session, ctx.client, ctx.settings, uuid.UUID(delivery_id))


@shared_task(name="boomerang.sweep", bind=True)
def sweep(self) -> dict[str, int]:
    """Enqueue due retries and anything whose message or worker was lost."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        now = utcnow()
        deliveries = due_delivery_ids(session, now, ctx.settings)
        jobs = due_job_ids(session, now, ctx.settings)
        session.commit()
    return {"deliveries": len(deliveries), "jobs": len(jobs)}
