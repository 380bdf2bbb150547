"""Thin Celery tasks: take ids, call the pipeline with a fresh session, let it commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.queues import (
    DELIVER_TASK,
    MAINTENANCE_QUEUE,
    PRUNE_TASK,
    REPLAY_TASK,
    RUN_JOBS_TASK,
    SWEEP_TASK,
)
from app.services import attempt_partitions
from app.services.ordering import wake_stranded
from app.services.replays import has_stalled_replays, replay_step
from app.services.retention import prune_batch
from config.settings import Settings
from workers.delivery.store import has_due_deliveries
from workers.running import has_queued_jobs, requeue_stranded_jobs

log = logging.getLogger(__name__)

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
# One replay task steps through replays for this long at most, then hands on to a fresh task, so
# a replay of many batches never holds a maintenance process away from the sweep for long.
REPLAY_SECONDS_PER_RUN = 20.0
# Between batches: the delivery workers get the rows just made due before the next batch lands.
REPLAY_PAUSE_SECONDS = 0.05
# A partition change that gave up waiting for its lock (lock_not_available) or ran past the
# statement timeout (query_canceled: moving a large day out of the DEFAULT partition) is tried
# again at the next run; the rest of the pass goes on.
GAVE_WAY = {"55P03", "57014"}


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
    jobs whose worker died (queued again), retries that came due, expired delivery leases, and
    ordered deliveries left waiting behind nothing."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        now = utcnow()
        requeued = requeue_stranded_jobs(session, now, ctx.settings)
        unparked = wake_stranded(session, now)
        jobs_queued = has_queued_jobs(session)
        deliveries_due = has_due_deliveries(session, now)
        replays_stalled = has_stalled_replays(session, now)
        session.commit()
    jobs_woken = ctx.job_waker.wake() if jobs_queued else False
    deliveries_woken = ctx.waker.wake() if deliveries_due else False
    if replays_stalled:
        self.app.send_task(REPLAY_TASK, queue=MAINTENANCE_QUEUE)
    return {
        "jobs_requeued": requeued,
        "jobs_woken": int(jobs_woken),
        "deliveries_woken": int(deliveries_woken),
        "ordered_unparked": unparked,
        "replays_woken": int(replays_stalled),
    }


@shared_task(name=REPLAY_TASK, bind=True, **DATABASE_OUTAGE)
def replay(self) -> dict[str, int]:
    """Step through running bulk replays, a batch per transaction, taking turns between them
    (a wake: which replays is Postgres's to say, not the message's)."""
    ctx = self.app.boomerang
    steps = replayed = 0
    deadline = time.monotonic() + REPLAY_SECONDS_PER_RUN
    with ctx.session_factory() as session:
        while True:
            stepped = replay_step(session, utcnow(), ctx.settings)
            session.commit()
            if stepped is None:
                return {"steps": steps, "replayed": replayed}
            steps += 1
            replayed = stepped.replayed
            if time.monotonic() >= deadline:
                self.app.send_task(REPLAY_TASK, queue=MAINTENANCE_QUEUE)
                return {"steps": steps, "replayed": replayed, "handed_on": 1}
            time.sleep(REPLAY_PAUSE_SECONDS)


@shared_task(name=PRUNE_TASK, bind=True)
def prune(self) -> dict[str, int]:
    """Keep the attempt log's partitions ahead, drop days past retention, then delete the other
    rows past retention in short batches."""
    ctx = self.app.boomerang
    with ctx.session_factory() as session:
        return prune_old_rows(session, ctx.settings)


def prune_old_rows(session: Session, settings: Settings) -> dict[str, int]:
    """The prune task's body: one transaction per partition change and per batch."""
    totals = maintain_attempt_partitions(session, utcnow(), settings)
    for _ in range(PRUNE_BATCHES_PER_RUN):
        counts = prune_batch(session, utcnow(), settings)
        session.commit()
        for name, count in counts.items():
            totals[name] = totals.get(name, 0) + count
        if max(counts.values()) < settings.prune_batch_size:
            break
        time.sleep(0.05)  # let other writers in between batches
    return totals


def maintain_attempt_partitions(
    session: Session, now: datetime, settings: Settings
) -> dict[str, int]:
    """Create the days ahead first, then drop the days past retention; each change commits at
    once, so its lock on the attempt log lasts one change. A change that could not have its
    lock in time waits for the next run."""
    totals = {"partitions_created": 0, "partitions_dropped": 0, "partitions_skipped": 0}
    for day in attempt_partitions.days_to_create(session, now):
        done = _in_own_transaction(session, attempt_partitions.create_partition, day)
        totals["partitions_created" if done else "partitions_skipped"] += 1
    cutoff = attempt_partitions.retention_cutoff(now, settings.retention_days)
    for name in attempt_partitions.expired_partitions(session, cutoff):
        done = _in_own_transaction(session, attempt_partitions.drop_partition, name)
        totals["partitions_dropped" if done else "partitions_skipped"] += 1
    session.commit()
    return totals


def _in_own_transaction(
    session: Session, change: Callable[[Session, Any], object], arg: Any
) -> bool:
    try:
        change(session, arg)
        session.commit()
    except OperationalError as error:
        session.rollback()
        if getattr(error.orig, "pgcode", None) not in GAVE_WAY:
            raise
        log.warning(
            "attempt partition change %s(%s) gave way: %s", change.__name__, arg, error.orig
        )
        return False
    return True
