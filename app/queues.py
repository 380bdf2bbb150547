"""Task and queue names, the after-commit sender, the web's send-only producer, and the wake.

Postgres is the source of truth; the broker only wakes workers. Everything that puts a message on
the broker goes through here, so a task's name and queue are said once, and the web gets a
producer that can send but carries none of a worker's resources (engine, HTTP client, job run).

Waking workers costs one broker message per burst, not one per job or delivery. Postgres holds
the queued jobs and due deliveries; a ``boomerang.run_jobs`` or ``boomerang.deliver`` message only
tells a worker process to go and drain them, so wakes are coalesced through a Redis key per kind
of work that means "a drain is running or about to":

- whoever makes work due (the outbox after commit, a manual retry, the sweep) sets the key with
  SET NX and sends a wake only if it was not set already;
- a draining process keeps the key alive while it works, and deletes it *before* its last look
  for due work, so anything committed after that look finds the key gone and sends a new wake;
- the key expires on its own, so a process killed mid-drain blocks nobody for long, and the sweep
  finds its leased work again when the leases run out. A job drain sets it with a short expiry
  before each job it runs: a job that runs long lets it lapse, and the next submission wakes
  another process instead of waiting behind that job.

A drain that finds more due work than it can take asks for help: one extra wake per second at
most, so idle processes on other machines join in while a burst lasts.

A hung Redis must not hang a request: every publish and wake gives up after
``BOOMERANG_REDIS_TIMEOUT_SECONDS``, and after a failure the process's ``Cooldown`` skips wakes
for a few seconds. A skipped wake costs a delay, never a job: the sweep finds the work in Postgres.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis
from celery import Celery
from kombu import Queue
from sqlalchemy.orm import Session

from app.cooldown import Cooldown, quick_redis
from app.db import TaskCall, TaskSender, enqueue_after_commit
from app.redis_client import celery_broker
from config.settings import Settings

log = logging.getLogger(__name__)

RUN_JOBS_TASK = "boomerang.run_jobs"
DELIVER_TASK = "boomerang.deliver"
SWEEP_TASK = "boomerang.sweep"
PRUNE_TASK = "boomerang.prune"
REPLAY_TASK = "boomerang.replay"

# Each queue has its own worker process, so one kind of work never waits behind another:
# ``jobs`` (the slow work), ``deliveries`` (outbound POSTs) and ``maintenance`` (the sweep,
# pruning, bulk replays).
JOBS_QUEUE = "jobs"
DELIVERIES_QUEUE = "deliveries"
MAINTENANCE_QUEUE = "maintenance"
QUEUES = (JOBS_QUEUE, DELIVERIES_QUEUE, MAINTENANCE_QUEUE)
QUEUE_OF_TASK = {
    RUN_JOBS_TASK: JOBS_QUEUE,
    DELIVER_TASK: DELIVERIES_QUEUE,
    SWEEP_TASK: MAINTENANCE_QUEUE,
    PRUNE_TASK: MAINTENANCE_QUEUE,
    REPLAY_TASK: MAINTENANCE_QUEUE,
}
# The tasks that are wakes: no arguments, coalesced through their Waker.
WAKE_TASKS = (RUN_JOBS_TASK, DELIVER_TASK)


def wake_jobs(session: Session) -> None:
    """Once this transaction commits, wake a jobs worker to drain the queued jobs."""
    enqueue_after_commit(session, RUN_JOBS_TASK, queue=JOBS_QUEUE)


def wake_deliveries(session: Session) -> None:
    """Once this transaction commits, wake a delivery worker to drain what it made due."""
    enqueue_after_commit(session, DELIVER_TASK, queue=DELIVERIES_QUEUE)


def make_celery(settings: Settings) -> Celery:
    """A Celery app with what producers and workers must agree on: broker, queues, routes."""
    broker_url, sentinel_options = celery_broker(settings.redis_url, settings.redis_timeout_seconds)
    app = Celery("boomerang", broker=broker_url)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=JOBS_QUEUE,
        task_routes={task: {"queue": queue} for task, queue in QUEUE_OF_TASK.items()},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A hung broker accepts connections and never answers: without a socket timeout a
        # publish waits forever. The worker raises these for its long-lived consumer.
        broker_transport_options={
            **sentinel_options,
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        },
        broker_connection_timeout=settings.redis_timeout_seconds,
        # A failed publish after commit is not fatal (the sweep re-enqueues), so do not block the
        # request retrying it: one more try, at once, in case a pooled connection had gone stale.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0},
    )
    return app


def send_wake(app: Celery, task: str) -> Callable[[], None]:
    """Put one wake message for ``task`` on its queue."""

    def send() -> None:
        app.send_task(task, queue=QUEUE_OF_TASK[task])

    return send


def task_sender(
    app: Celery, wakers: Mapping[str, Waker], cooldown: Cooldown | None = None
) -> TaskSender:
    """A sender for after-commit tasks. A broker outage must not fail a committed request:
    Postgres already holds the work and the sweep will wake a worker for it."""
    cooldown = cooldown or Cooldown()

    def send(calls: Sequence[TaskCall]) -> None:
        if cooldown.resting:
            log.debug("Redis is resting; %d task(s) left to the sweep", len(calls))
            return
        try:
            # One coalesced wake per kind, however many jobs or deliveries were made due.
            for name in dict.fromkeys(call.name for call in calls if call.name in wakers):
                wakers[name].wake()
            others = [call for call in calls if call.name not in wakers]
            if others:
                with app.producer_or_acquire() as producer:
                    for call in others:
                        app.send_task(
                            call.name, args=call.args, queue=call.queue, producer=producer
                        )
        except Exception:
            cooldown.failed("enqueue")
            log.warning(
                "could not enqueue %d task(s); the sweep will pick them up",
                len(calls),
                exc_info=True,
            )

    return send


@dataclass(frozen=True)
class WakeKeys:
    """The Redis keys one kind of drain coordinates through."""

    draining: str
    help: str


DELIVERY_WAKE = WakeKeys("boomerang:deliveries:draining", "boomerang:deliveries:help")
JOB_WAKE = WakeKeys("boomerang:jobs:draining", "boomerang:jobs:help")
# Long enough to outlive the gap between a drain's refreshes, short enough that a killed drain
# delays new work by seconds, not minutes.
WAKE_TTL_SECONDS = 10
HELP_INTERVAL_MS = 1000
# A drain that runs out of work keeps looking this long, this often, before it lets go of its
# key: a steady trickle of work is then picked up by the drain already running instead of
# costing a wake message each.
LINGER_SECONDS = 0.5
LINGER_POLL_SECONDS = 0.02


class Waker:
    """Coalesces one kind of wake for one process; ``send`` puts the wake message on the
    broker."""

    def __init__(
        self,
        redis_url: str,
        send: Callable[[], None],
        keys: WakeKeys = DELIVERY_WAKE,
        *,
        timeout_seconds: float = 0.5,
        cooldown: Cooldown | None = None,
    ) -> None:
        self._redis = quick_redis(redis_url, timeout_seconds)
        self._send = send
        self.keys = keys
        self.cooldown = cooldown or Cooldown()
        self._help_quiet_until = float("-inf")

    def wake(self) -> bool:
        """Wake a worker unless one is draining already, or Redis is failing; True if a wake
        was sent."""
        if self.cooldown.resting:
            return False  # the sweep wakes a worker once Redis answers
        try:
            if not self._redis.set(self.keys.draining, "1", nx=True, ex=WAKE_TTL_SECONDS):
                return False
        except (redis.ConnectionError, redis.TimeoutError):
            # The broker is this same Redis: a send now would only wait out another timeout.
            self.cooldown.failed("wake")
            return False
        except redis.RedisError:
            log.warning("could not coordinate a wake; sending one anyway", exc_info=True)
        self._send()
        return True

    def ask_for_help(self) -> bool:
        """Wake one more process, at most once a second however many drains ask."""
        if self.cooldown.resting or time.monotonic() < self._help_quiet_until:
            return False
        # A drain asks after every job or batch while work is queued: without this, each ask is
        # a Redis round trip that the key below answers "not yet" to.
        self._help_quiet_until = time.monotonic() + HELP_INTERVAL_MS / 2000
        try:
            if not self._redis.set(self.keys.help, "1", nx=True, px=HELP_INTERVAL_MS):
                return False
        except redis.RedisError:
            return False  # the burst is being drained already; help is only an optimisation
        try:
            self._send()
        except Exception:
            # Redis can take the SET and then fail the publish (a primary failing over between
            # the two). Raising would abort the drain that asked, and the job or deliveries it
            # has just leased would wait out their lease before anyone runs them.
            self.cooldown.failed("help")
            return False
        return True

    def draining(self, for_ms: int | None = None) -> None:
        """A drain is at work: keep the key that stops redundant wakes, for ``for_ms`` when
        given (a job drain about to run a job that may take long) or else the usual while."""
        # On failure, worst case a few redundant wakes, each a quick empty drain.
        with contextlib.suppress(redis.RedisError):
            if for_ms is None:
                self._redis.set(self.keys.draining, "1", ex=WAKE_TTL_SECONDS)
            else:
                self._redis.set(self.keys.draining, "1", px=for_ms)

    def about_to_stop(self) -> None:
        """Called before a drain's last look for work: later work must send its own wake."""
        # On failure the key expires by itself, and the sweep covers the gap.
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(self.keys.draining)


class Producer:
    """What a process that only sends needs: a Celery app for publishing, and the wakes, all
    resting together after a Redis failure."""

    def __init__(
        self, settings: Settings, app: Celery | None = None, cooldown: Cooldown | None = None
    ) -> None:
        self.app = app or make_celery(settings)
        self.cooldown = cooldown or Cooldown()
        timeout = settings.redis_timeout_seconds
        self.deliveries = Waker(
            settings.redis_url,
            send_wake(self.app, DELIVER_TASK),
            timeout_seconds=timeout,
            cooldown=self.cooldown,
        )
        self.jobs = Waker(
            settings.redis_url,
            send_wake(self.app, RUN_JOBS_TASK),
            JOB_WAKE,
            timeout_seconds=timeout,
            cooldown=self.cooldown,
        )

    def sender(self) -> TaskSender:
        """The after-commit sender for this producer's sessions."""
        wakers = {DELIVER_TASK: self.deliveries, RUN_JOBS_TASK: self.jobs}
        return task_sender(self.app, wakers, self.cooldown)
