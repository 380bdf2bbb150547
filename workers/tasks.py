"""Thin Celery tasks: take ids, call the pipeline with a fresh session, let it commit."""

from __future__ import annotations

import time
import uuid

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from app.services.attempts import has_due_deliveries
from app.services.jobs import due_job_ids
from app.services.retention import prune_batch
from workers.celery_app import JOBS_QUEUE
from workers.delivery import utcnow
from workers.running import execute_job

# While Postgres is unreachable a task backs off and tries again by itself. Should it run out of
# retries, nothing is lost: the row is still in Postgres and the sweep enqueues it again.
DATABASE_OUTAGE = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 12,
}

PRUNE_BATCHES_PER_RUN = 100


@shared_task(name="boomerang.run_job", bind=True, **DATABASE_OUTAGE)
def run_job(self, job_id: str) -> None:
    """Run one job to its end and raise its events."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        execute_job(session, ctx.settings, uuid.UUID(job_id))


@shared_task(name="boomerang.deliver", bind=True, **DATABASE_OUTAGE)
def deliver(self, *_ignored: str) -> dict[str, int]:
    """Drain due deliveries (a wake: which deliveries is Postgres's to say, not the message's).

    Older producers sent one message per delivery id; such an id is ignored the same way.
    """
    stats = self.app.boomerang.dispatcher.drain()
    return {"attempts": stats.attempts, "succeeded": stats.succeeded, "batches": stats.batches}


def queue_is_empty(app, queue: str) -> bool:
    """Whether the broker holds no waiting message for ``queue``; True when it cannot tell."""
    try:
        with app.connection_for_read() as connection:
            return connection.default_channel.client.llen(queue) == 0
    except Exception:
        return True  # unknown: enqueue again; a lease stops a second send


@shared_task(name="boomerang.sweep", bind=True)
def sweep(self) -> dict[str, int]:
    """Enqueue due retries and anything whose message or worker was lost."""
    ctx = self.app.boomerang
    requeue_jobs = queue_is_empty(self.app, JOBS_QUEUE)
    with ctx.session_factory() as session:
        now = utcnow()
        # Deliveries need no message each: one wake starts a drain that finds them all (retries
        # that came due, leases that ran out, wakes that were lost), unless one is running.
        deliveries_due = has_due_deliveries(session, now)
        jobs = due_job_ids(session, now, ctx.settings, requeue_jobs)
        session.commit()
    woken = ctx.waker.wake() if deliveries_due else False
    return {"deliveries_woken": int(woken), "jobs": len(jobs)}


@shared_task(name="boomerang.prune", bind=True)
def prune(self) -> dict[str, int]:
    """Delete rows past retention, one short transaction per batch."""
    ctx = self.app.boomerang
    totals: dict[str, int] = {}
    with ctx.session_factory() as session:
        for _ in range(PRUNE_BATCHES_PER_RUN):
            counts = prune_batch(session, utcnow(), ctx.settings)
            session.commit()
            for name, count in counts.items():
                totals[name] = totals.get(name, 0) + count
            if max(counts.values()) < ctx.settings.prune_batch_size:
                break
            time.sleep(0.05)  # let other writers in between batches
    return totals
