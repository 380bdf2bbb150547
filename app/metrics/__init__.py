"""Prometheus metrics: what the code counts, and how a scrape adds it up across processes.

gunicorn workers and Celery's pool processes each count in their own memory-mapped files in
``BOOMERANG_METRICS_DIR`` (prometheus_client's multiprocess mode), and a scrape adds up every file
there. So ``/metrics`` on the web speaks for every process on its machine, and
``boomerang metrics`` does the same on a machine that runs only workers.

The recording functions never raise: a metric must not fail the work it measures.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.metrics import files as metrics_files

log = logging.getLogger(__name__)

# Jobs run from milliseconds (echo) to the job lease (15 min by default) and beyond.
JOB_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# From a job's end to its event's arrival: sub-second when healthy, up to the ~3-day retry
# horizon when a receiver was down.
DELIVERED_AFTER_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    4 * 3600,
    24 * 3600,
    3 * 24 * 3600,
)

OUTCOMES = (
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "connection_error",
    "blocked",
    "too_large",
    "configuration",
    "error",
)


# Why a leased delivery went back unsent: its tenant's attempts-per-second ceiling, the share of a
# process's slots that callbacks not yet known to answer may hold, its callback's concurrency
# limit across the fleet, or its callback's rate (or a Retry-After pause).
HELD_BACK_REASONS = ("tenant_ceiling", "unproven_share", "callback_concurrency", "callback_rate")


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry
    jobs_submitted: Counter
    events_published: Counter
    filter_failures: Counter
    jobs_finished: Counter
    job_duration: Histogram
    delivery_attempts: Counter
    delivered_after: Histogram
    callbacks_disabled: Counter
    deliveries_held_back: Counter


@functools.cache
def _metrics() -> _Metrics:
    # Made on first use rather than at import: a metric picks where it keeps its values (memory
    # or a shared file) when it is made, so it must come after enable_multiprocess.
    registry = CollectorRegistry()
    return _Metrics(
        registry=registry,
        jobs_submitted=Counter(
            "boomerang_jobs_submitted",
            "Jobs accepted by POST /v1/jobs (idempotent repeats not counted).",
            ["type"],
            registry=registry,
        ),
        events_published=Counter(
            "boomerang_events_published",
            "Events stored by POST /v1/events and /v1/events:batch (repeats of an event id not "
            "counted). No type label: types are the tenants' own, and unbounded.",
            registry=registry,
        ),
        filter_failures=Counter(
            "boomerang_filter_failures",
            "Events a callback's filter could not decide on (a missing field, a type mismatch, "
            "a result that is not a boolean): that callback did not hear them.",
            registry=registry,
        ),
        jobs_finished=Counter(
            "boomerang_jobs_finished",
            "Jobs that reached an end: succeeded or failed.",
            ["type", "status"],
            registry=registry,
        ),
        job_duration=Histogram(
            "boomerang_job_duration_seconds",
            "How long a job's last run took, from its start to its recorded end.",
            ["type"],
            buckets=JOB_DURATION_BUCKETS,
            registry=registry,
        ),
        delivery_attempts=Counter(
            "boomerang_delivery_attempts",
            "Delivery attempts by what came back: 2xx, 3xx, 4xx, 5xx, timeout, "
            "connection_error, blocked (the SSRF guard), too_large, configuration or error.",
            ["outcome"],
            registry=registry,
        ),
        delivered_after=Histogram(
            "boomerang_delivered_after_seconds",
            "From the event (a job's end) to its successful delivery, retries included.",
            buckets=DELIVERED_AFTER_BUCKETS,
            registry=registry,
        ),
        callbacks_disabled=Counter(
            "boomerang_callbacks_disabled",
            "Callbacks disabled for failing too long or answering 410 Gone.",
            registry=registry,
        ),
        deliveries_held_back=Counter(
            "boomerang_deliveries_held_back",
            "Leased deliveries put back unsent because a limit held them, by the limit: "
            + ", ".join(HELD_BACK_REASONS)
            + ". They keep their place in the queue.",
            ["reason"],
            registry=registry,
        ),
    )


P = ParamSpec("P")


# A failing metric is logged at most this often: on a full disk every attempt fails to count,
# and a traceback per attempt would fill the logs (and their disk) next.
WARN_EVERY_SECONDS = 60.0


def _never_raises(record: Callable[P, None]) -> Callable[P, None]:
    last_warned = [-WARN_EVERY_SECONDS]

    @functools.wraps(record)
    def safely(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            # E.g. a temp-file cleaner removed the metrics directory under a running process, or
            # its disk is full.
            if time.monotonic() - last_warned[0] >= WARN_EVERY_SECONDS:
                last_warned[0] = time.monotonic()
                log.warning("could not record metric %s", record.__name__, exc_info=True)

    return safely


@_never_raises
def job_submitted(job_type: str) -> None:
    """Count a new job."""
    _metrics().jobs_submitted.labels(type=job_type).inc()


@_never_raises
def events_published(count: int) -> None:
    """Count newly stored published events."""
    if count:
        _metrics().events_published.inc(count)


@_never_raises
def filter_failed() -> None:
    """Count an event a callback's filter could not decide on."""
    _metrics().filter_failures.inc()


@_never_raises
def job_finished(job_type: str, status: str, duration_seconds: float | None) -> None:
    """Count a job's end (``succeeded`` or ``failed``) and how long its last run took."""
    metrics = _metrics()
    metrics.jobs_finished.labels(type=job_type, status=status).inc()
    if duration_seconds is not None:
        metrics.job_duration.labels(type=job_type).observe(max(duration_seconds, 0.0))


@_never_raises
def delivery_attempted(outcome: str) -> None:
    """Count one delivery attempt by its outcome label (``HttpResult.outcome``)."""
    _metrics().delivery_attempts.labels(outcome=outcome).inc()


@_never_raises
def delivered_after(seconds: float) -> None:
    """Observe the time from an event (a job's end) to its successful delivery."""
    _metrics().delivered_after.observe(max(seconds, 0.0))


@_never_raises
def deliveries_held_back(reason: str, count: int) -> None:
    """Count leased deliveries put back unsent, by the limit that held them (HELD_BACK_REASONS)."""
    if count:
        _metrics().deliveries_held_back.labels(reason=reason).inc(count)


@_never_raises
def callback_disabled() -> None:
    """Count a callback being disabled."""
    _metrics().callbacks_disabled.inc()


# Many processes, one directory -------------------------------------------------------------------


def enable_multiprocess(path: str | os.PathLike[str]) -> Path:
    """Count in shared files in ``path`` from now on, in this process and those it forks.

    Call it once at process start, before anything is counted: gunicorn's master, Celery's
    worker main process.
    """
    directory = metrics_files.use_directory(path)
    _metrics.cache_clear()  # anything made before would still count in memory
    return directory


def process_metrics() -> Collector:
    """Every process's counts on this machine in multiprocess mode, else this process's own."""
    directory = metrics_files.multiprocess_dir()
    if directory is None:
        return _metrics().registry
    return metrics_files.MachineCollector(directory)


# Scraping --------------------------------------------------------------------------------------


class _Together:
    """Several collectors read as one."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def render(collectors: Iterable[Collector], accept: str | None) -> tuple[bytes, str]:
    """The exposition (Prometheus text, or OpenMetrics when asked for) and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Together(collectors)), content_type


def token_accepted(token: str, authorization: str | None) -> bool:
    """True when no token is configured, or ``authorization`` is ``Bearer <token>``."""
    if not token:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )
