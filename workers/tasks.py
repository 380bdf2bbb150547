"""Thin Celery tasks: take ids, call the pipeline with a fresh session, let it commit."""

from __future__ import annotations

import time

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from app.clock import utcnow
from app.queues import DELIVER_TASK, PRUNE_TASK, RUN_JOBS_TASK, SWEEP_TASK
from app.services.retention import prune_batch
from workers.delivery.store import has_due_deliveries
from workers.running import has_queued_jobs, requeue_stranded_jobs

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


@shared_task(name=RUN_JOBS_TASK, bind=True, **DATABASE_OUTAGE)
def run_jobs(self) -> dict[str, int]:
    """Run queued jobs (a wake: which jobs is Postgres's to say, not the message's)."""
    stats = self.app.boomerang.job_drain.drain()
    return {"jobs": stats.jobs, "succeeded": stats.succeeded}


@shared_task(name=DELIVER_TASK, bind=True, **DATABASE_OUTAGE)
def deliver(self) -> dict[str, int]:
    """Drain due deliveries (a wake: which deliveries is Postgres's to say, not the message's)."""
    stats = self.app.boomerang.dispatcher.drain()
    return {"attempts": stats.attempts, "succeeded": stats.succeeded, "batches": stats.batches}


@shared_task(name=SWEEP_TASK, bind=True)
def sweep(self) -> dict[str, int]:
    """Wake drains for work that is due and no worker holds: queued jobs whose wake was lost,
    jobs whose worker died (queued again), retries that came due, expired delivery leases."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        now = utcnow()
        requeued = requeue_stranded_jobs(session, now, ctx.settings)
        jobs_queued = has_queued_jobs(session)
        deliveries_due = has_due_deliveries(session, now)
        session.commit()
    jobs_woken = ctx.job_waker.wake() if jobs_queued else False
    deliveries_woken = ctx.waker.wake() if deliveries_due else False
    return {
        "jobs_requeued": requeued,
        "jobs_woken": int(jobs_woken),
        "deliveries_woken": int(deliveries_woken),
    }


@shared_task(name=PRUNE_TASK, bind=True)
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
