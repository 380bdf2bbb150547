"""The worker's Celery application: reliability settings, the beat schedule, and the per-process
resources the tasks share (engine, outbound client, drain, wake)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import tracing
from app.announce import Announcer, install_announcer
from app.clock import follow_database
from app.db import make_engine, make_session_factory
from app.db_deadline import install_deadlines
from app.jobtypes import load_job_modules
from app.queues import PRUNE_TASK, SWEEP_TASK, Producer, Waker, make_celery
from app.redis_client import celery_broker
from app.url_guard import announce_network_policy
from config.settings import Settings
from workers.delivery.drain import Dispatcher
from workers.delivery.http import OutboundClient
from workers.running import JobDrain

# Longer than the web's: a worker waits out a slow Redis rather than give up on its consumer, yet
# notices a hung one within seconds.
WORKER_REDIS_TIMEOUT_SECONDS = 5.0
# What the workers run is keyed: the head of a queue, rows by id, a key's deliveries. Walking an
# index is right however many rows the tables hold. But each connection plans its hot statements
# once (a generic plan, app/prepared.py), from the statistics of that moment, and Postgres
# analyzes a table only a minute or more after it grew. Planned beside a small queue, the claim
# read and sorted every due row to lease a few (a bitmap scan: 77 ms instead of 5 with 13,000
# due), and recording a batch read the whole delivery table to find its rows by id (a seq scan,
# 12 ms at 20,000 rows and growing with it). So the workers' connections plan neither while an
# index can serve; a table with no usable index is still read whole.
QUEUE_PLANNER = {"enable_bitmapscan": "off", "enable_seqscan": "off"}


@dataclass
class WorkerContext:
    """Per-process resources the tasks share; built once per app, reset after fork."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    client: OutboundClient
    waker: Waker  # wakes delivery drains
    job_waker: Waker
    # For the job drain's watchdog: one connection of its own (see JobDrain).
    hand_back_sessions: sessionmaker[Session] | None = None
    _dispatcher: Dispatcher | None = None
    _job_drain: JobDrain | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        """The process's drain, made on first use: the outbound client's event-loop thread
        does not survive the fork from the parent that built this context."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(
                self.settings, self.session_factory, self.client, self.waker
            )
        return self._dispatcher

    @property
    def job_drain(self) -> JobDrain:
        """The process's job drain."""
        if self._job_drain is None:
            self._job_drain = JobDrain(
                self.settings,
                self.session_factory,
                self.job_waker,
                hand_back_sessions=self.hand_back_sessions,
            )
        return self._job_drain


def configure_worker(app: Celery, settings: Settings) -> None:
    """What only a consuming worker needs on top of ``make_celery``."""
    app.conf.update(
        include=["workers.tasks"],
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
        broker_transport_options={
            # Keep what make_celery put there (behind Sentinel, the primary's name).
            **app.conf.broker_transport_options,
            "visibility_timeout": 3600,
            # A hung Redis keeps the connection open and answers nothing. The consumer's BRPOP
            # polls every second, so a reply overdue by the health-check interval means the
            # connection is dead: kombu drops it and the worker reconnects on its own.
            "socket_timeout": WORKER_REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": WORKER_REDIS_TIMEOUT_SECONDS,
            "health_check_interval": WORKER_REDIS_TIMEOUT_SECONDS,
            # Behind Sentinel, ask the sentinels within the same bound.
            **celery_broker(settings.redis_url, WORKER_REDIS_TIMEOUT_SECONDS)[1],
        },
        broker_connection_timeout=WORKER_REDIS_TIMEOUT_SECONDS,
        # Keep reconnecting for as long as Redis is away: Postgres holds the work meanwhile.
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # On a lost broker connection, stop late-ack tasks: their messages are redelivered and the
        # Postgres lease keeps the redelivery from running alongside.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.sweep_interval_seconds,
                # A sweep that waited longer than one interval is already superseded.
                "options": {"expires": settings.sweep_interval_seconds},
            },
            "prune": {
                "task": PRUNE_TASK,
                "schedule": settings.prune_interval_seconds,
                "options": {"expires": settings.prune_interval_seconds},
            },
        },
        # Every host runs beat; the one holding a Postgres advisory lock sends the schedule,
        # which it keeps in memory, so no schedule file is shared or fought over.
        beat_scheduler="workers.leader:LeaderScheduler",
        # Workers report each task's life to Flower. The producer's "task-sent" event is left
        # off: it doubled the broker writes of every API request that enqueues a job, and Flower
        # shows a task from the moment a worker receives it.
        worker_send_task_events=True,
    )


def create_celery(settings: Settings | None = None) -> Celery:
    """A configured Celery app with its worker context attached as ``app.boomerang``."""
    settings = settings or Settings.from_env()
    tracing.exporter_names(settings, os.environ)  # a bad OTEL_* setting stops the boot here
    app = make_celery(settings)
    configure_worker(app, settings)
    load_job_modules(settings.job_modules)
    announce_network_policy(settings)
    # Workers wait out a slow Postgres far longer than a request would, but not forever: a
    # frozen server cannot enforce its own statement_timeout.
    install_deadlines(
        settings.database_connect_timeout_seconds, settings.worker_statement_timeout_seconds
    )
    engine = make_engine(
        settings, settings.worker_statement_timeout_seconds, server_settings=QUEUE_PLANNER
    )
    producer = Producer(settings, app)
    session_factory = make_session_factory(engine, producer.sender())
    # Connects only when the job drain's watchdog first hands jobs back.
    hand_back_engine = make_engine(
        settings,
        settings.worker_statement_timeout_seconds,
        server_settings=QUEUE_PLANNER,
        pool_size=1,
        max_overflow=0,
    )
    hand_back_sessions = make_session_factory(hand_back_engine, producer.sender())
    announcer = Announcer(settings.redis_url, settings.redis_timeout_seconds, producer.cooldown)
    install_announcer(session_factory, announcer)
    install_announcer(hand_back_sessions, announcer)
    app.boomerang = WorkerContext(  # type: ignore[attr-defined]
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        client=OutboundClient(settings, pool_size=settings.delivery_concurrency),
        waker=producer.deliveries,
        job_waker=producer.jobs,
        hand_back_sessions=hand_back_sessions,
    )

    @worker_process_init.connect(weak=False)
    def _reset_after_fork(**_kwargs: object) -> None:
        # Connections inherited from the parent would be shared between processes.
        engine.dispose(close=False)
        hand_back_engine.dispose(close=False)
        # The pool processes take leases and set due times: on Postgres' clock, not the host's.
        follow_database(engine, settings.clock_skew_seconds)

    @worker_process_shutdown.connect(weak=False)
    def _record_what_is_in_flight(**_kwargs: object) -> None:
        # A warm shutdown: POSTs still in flight are waited for and recorded, not sent again.
        context = app.boomerang  # type: ignore[attr-defined]
        if context._dispatcher is not None:
            context._dispatcher.finish_tail(settings.total_timeout_seconds + 5)

    @worker_process_init.connect(weak=False)
    def _trace_this_process(**_kwargs: object) -> None:
        # In each pool process, not in the parent: only they run tasks, and beat (built here
        # too) would otherwise make a trace of every sweep it sends.
        if tracing.configure(settings):
            tracing.instrument_celery()

    @worker_process_shutdown.connect(weak=False)
    def _send_the_last_spans(**_kwargs: object) -> None:
        # After the attempts in flight were recorded (connected after that), and before the
        # pool process exits without running atexit hooks.
        tracing.flush()

    return app
