"""The Celery application: queues, reliability settings and the beat schedule.

Three queues, each for its own worker process so one kind of work never waits behind another:
``jobs`` (the slow work), ``deliveries`` (outbound POSTs) and ``maintenance`` (the sweep).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import TaskCall, make_engine, make_session_factory
from app.services.events import DELIVER_TASK, DELIVERIES_QUEUE
from app.url_guard import announce_network_policy
from config.settings import Settings
from workers.dispatch import Dispatcher
from workers.http import OutboundClient
from workers.jobs import load_job_modules
from workers.wake import Waker

log = logging.getLogger(__name__)

JOBS_QUEUE = "jobs"
MAINTENANCE_QUEUE = "maintenance"


@dataclass
class WorkerContext:
    """Per-process resources the tasks share; built once per app, reset after fork."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    client: OutboundClient
    waker: Waker
    _dispatcher: Dispatcher | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        """The process's drain and its thread pool, made on first use: threads do not survive
        the fork from the parent that built this context."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(
                self.settings, self.session_factory, self.client, self.waker
            )
        return self._dispatcher


def send_wake(app: Celery) -> Callable[[], None]:
    """Put one ``boomerang.deliver`` wake on the deliveries queue."""

    def send() -> None:
        app.send_task(DELIVER_TASK, queue=DELIVERIES_QUEUE)

    return send


def task_sender(app: Celery):
    """A sender for after-commit tasks. A broker outage must not fail a committed request:
    Postgres already holds the work and the sweep will enqueue it again."""

    def send(calls: Sequence[TaskCall]) -> None:
        try:
            wakes = [call for call in calls if call.name == DELIVER_TASK]
            others = [call for call in calls if call.name != DELIVER_TASK]
            if wakes:
                # One coalesced wake, however many deliveries were made due.
                app.boomerang.waker.wake()  # type: ignore[attr-defined]
            if others:
                with app.producer_or_acquire() as producer:
                    for call in others:
                        app.send_task(
                            call.name, args=call.args, queue=call.queue, producer=producer
                        )
        except Exception:
            log.warning(
                "could not enqueue %d task(s); the sweep will pick them up",
                len(calls),
                exc_info=True,
            )

    return send


def create_celery(settings: Settings | None = None) -> Celery:
    """A configured Celery app with its worker context attached as ``app.boomerang``."""
    settings = settings or Settings.from_env()
    app = Celery("boomerang", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_queues=[Queue(JOBS_QUEUE), Queue(DELIVERIES_QUEUE), Queue(MAINTENANCE_QUEUE)],
        task_default_queue=JOBS_QUEUE,
        task_routes={
            "boomerang.run_job": {"queue": JOBS_QUEUE},
            "boomerang.deliver": {"queue": DELIVERIES_QUEUE},
            "boomerang.sweep": {"queue": MAINTENANCE_QUEUE},
            "boomerang.prune": {"queue": MAINTENANCE_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Acknowledge after the task ran, so a worker that dies mid-task leaves its message to be
        # delivered again instead of silently dropping it.
        task_acks_late=True,
        # With acks_late, a child process killed by SIGKILL or the OOM killer would otherwise be
        # acked as failed; rejecting requeues the message.
        task_reject_on_worker_lost=True,
        # Take one message at a time per process, so a long job cannot hoard messages that an
        # idle worker could run. The delivery worker raises this on its command line.
        worker_prefetch_multiplier=1,
        # Messages unacked this long go back to the queue (Redis transport). Longer than any
        # legitimate task; the lease in Postgres stops a redelivered message from running twice.
        broker_transport_options={"visibility_timeout": 3600},
        # On a lost broker connection, stop late-ack tasks: their messages are redelivered and the
        # Postgres lease keeps the redelivery from running alongside.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        # A failed publish after commit is not fatal (the sweep re-enqueues), so do not block the
        # request for long retrying it.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        beat_schedule={
            "sweep": {
                "task": "boomerang.sweep",
                "schedule": settings.sweep_interval_seconds,
                # A sweep that waited longer than one interval is already superseded.
                "options": {"expires": settings.sweep_interval_seconds},
            },
            "prune": {
                "task": "boomerang.prune",
                "schedule": settings.prune_interval_seconds,
                "options": {"expires": settings.prune_interval_seconds},
            },
        },
        beat_schedule_filename=str(Path(tempfile.gettempdir()) / "boomerang-beat-schedule"),
        # Workers report each task's life to Flower. The producer's "task-sent" event is left
        # off: it doubled the broker writes of every API request that enqueues a job, and Flower
        # shows a task from the moment a worker receives it.
        worker_send_task_events=True,
    )
    load_job_modules(settings.job_modules)
    announce_network_policy(settings)
    engine = make_engine(settings)
    waker = Waker(settings.redis_url, send_wake(app))
    app.boomerang = WorkerContext(  # type: ignore[attr-defined]
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine, task_sender(app)),
        client=OutboundClient(settings, pool_size=settings.delivery_concurrency),
        waker=waker,
    )

    @worker_process_init.connect(weak=False)
    def _reset_after_fork(**_kwargs: object) -> None:
        # Connections inherited from the parent would be shared between processes.
        engine.dispose(close=False)

    return app
