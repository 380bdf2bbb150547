"""Running jobs: a drain claims the next queued job, runs it, and records its outcome together
with the claim of the one after it.

Every step is lease-checked: a worker whose lease ran out (it was too slow, or cut off from
Postgres) finds the job taken over and records nothing. The outcome and the events it raises are
written in one transaction (the outbox), so a job ends if and only if its events exist.

A drain leases only the job it is running, so a slow job holds up no other job: the others stay
queued for any other process, and the wake key lapses while a job runs long (see app/queues.py),
so new work wakes another process instead of waiting. Short jobs cost one transaction each: the
finish of one and the claim of the next.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session, sessionmaker

from app import events, metrics, tracing
from app.clock import utcnow
from app.db import after_commit, commit_with_retry
from app.jobtypes import JobContext, get_job_type
from app.logs import bind_log_context
from app.models import Job, JobStatus
from app.prepared import PreparedStatement
from app.queues import LINGER_POLL_SECONDS, LINGER_SECONDS, Waker, wake_jobs
from app.schemas import JobSchema
from app.services import outbox
from app.services.ordering import lock_key, note_held
from config.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

# A drain gives its process back after this long (between jobs), so other messages on the queue
# and a warm shutdown do not wait on a long run of short jobs.
DRAIN_SECONDS = 10.0
# While a job runs, the wake key says "this drain will look again within" this long. A job that
# runs longer lets the key lapse, so work submitted meanwhile wakes another process.
SHORT_JOB_MS = 250
# ... and it is set again before a job only when it was set longer ago than this, so it always
# has at least SHORT_JOB_MS less this left when a job starts.
KEY_REFRESH_SECONDS = 0.05
# A busy drain takes over jobs whose worker died at most this long after their lease ran out, as
# a delivery drain claims expired delivery leases itself. The sweep does it too, but its message
# waits behind busy drains on every process that could take it.
STRANDED_CHECK_SECONDS = 1.0


class LeaseLost(Exception):
    """Another worker took the job over; this run must stop without recording anything."""


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    type: str
    input: dict[str, Any]
    lease_id: uuid.UUID
    attempt: int
    # The submitting request's trace context (app/tracing.py); None while tracing is off.
    traceparent: str | None = None
    tenant_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Outcome:
    """What running a job came to: its result, or the error that failed it."""

    result: Any = None
    error: str | None = None
    # The run's span, when traced: the events its end raises are its children.
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.error is None


# Lease the oldest queued job nobody holds, and say whether more are queued (so the drain can
# ask for help). SKIP LOCKED lets any number of drains claim side by side.
_CLAIM_NEXT = PreparedStatement(
    "boomerang_claim_job",
    text(
        """
    WITH next AS (
        SELECT id FROM job
        WHERE status = 'queued' AND attempts < max_attempts AND (:any_id OR id = :only)
        ORDER BY enqueued_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE job
    SET status = 'running', attempts = job.attempts + 1, lease_id = :lease_id,
        locked_until = :locked_until, started_at = :now
    FROM next
    WHERE job.id = next.id
    RETURNING job.id, job.type, job.input, job.attempts, job.traceparent, job.tenant_id,
              EXISTS (SELECT 1 FROM job queued
                      WHERE queued.status = 'queued' AND queued.id <> job.id) AS more
    """
    ),
)


def claim_next_job(
    session: Session, now: datetime, settings: Settings, only: uuid.UUID | None = None
) -> tuple[ClaimedJob | None, bool]:
    """Lease the oldest queued job (or only ``only``, if it is queued); (the job or None,
    whether others are queued)."""
    lease_id = uuid.uuid4()
    row = _CLAIM_NEXT.execute(
        session.connection(),
        {
            "any_id": only is None,
            "only": only,
            "lease_id": lease_id,
            "now": now,
            "locked_until": now + timedelta(seconds=settings.job_lease_seconds),
        },
    ).one_or_none()
    if row is None:
        return None, False
    claimed = ClaimedJob(
        row.id, row.type, row.input, lease_id, row.attempts, row.traceparent, row.tenant_id
    )
    return claimed, row.more


def has_queued_jobs(session: Session) -> bool:
    """Whether any job waits for a worker: a cheap indexed probe for the sweep."""
    return bool(session.scalar(select(exists().where(Job.status == JobStatus.QUEUED))))


def requeue_stranded_jobs(session: Session, now: datetime, settings: Settings) -> int:
    """Queue again the running jobs whose worker's lease ran out (it died, or lost Postgres),
    and fail those out of attempts, still raising ``job.failed``. How many changed."""
    stranded = list(
        session.scalars(
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.locked_until < now)
            .order_by(Job.locked_until)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )
    for job in stranded:
        if job.attempts >= job.max_attempts:
            # A job whose worker died on every attempt still ends, and still sends job.failed.
            error = f"the worker running this job stopped {job.attempts} times; giving up"
            for name, value in _ended(Outcome(error=error), now).items():
                setattr(job, name, value)
            session.flush()
            # No run of it ended to be the parent: the request that submitted it is.
            with tracing.within(job.traceparent):
                _raise_end(session, job, now)
        else:
            job.status = JobStatus.QUEUED
            job.lease_id = None
            job.locked_until = None
            job.enqueued_at = now
    if stranded:
        session.flush()
        wake_jobs(session)
    return len(stranded)


def run_claimed(
    session: Session,
    settings: Settings,
    claimed: ClaimedJob,
    clock: Callable[[], datetime] = utcnow,
) -> Outcome | None:
    """Call the job's function with progress reporting; None if the lease was lost meanwhile.

    Progress is committed as it is reported (it extends the lease); the outcome is not recorded
    here, so the caller can record it together with its next claim.
    """

    def report(progress: dict[str, Any]) -> None:
        if isinstance(progress.get("message"), str):
            progress["message"] = progress["message"].replace("\x00", "\ufffd")
        try:
            still_ours = record_progress(session, claimed, progress, clock(), settings)
        except Exception:
            session.rollback()  # leave the session usable for recording the outcome
            raise
        if not still_ours:
            session.rollback()
            raise LeaseLost
        session.commit()

    with bind_log_context(job_id=claimed.id):
        if not tracing.enabled():
            return _call_job_function(claimed, report)
        return _traced_run(claimed, report)


def _traced_run(claimed: ClaimedJob, report: Callable[[dict[str, Any]], None]) -> Outcome | None:
    """The run as a span, child of the request that submitted the job (it may have been
    submitted long ago, elsewhere) and linked to the drain running it; progress raised meanwhile
    is its child."""
    with tracing.span(
        f"job {claimed.type}",
        parent=claimed.traceparent,
        kind="consumer",
        attributes={
            "boomerang.job.id": str(claimed.id),
            "boomerang.job.type": claimed.type,
            "boomerang.job.attempt": claimed.attempt,
        },
        link_current=True,
    ) as span:
        outcome = _call_job_function(claimed, report)
        if span is None:
            return outcome
        if outcome is None:
            span.set_attribute("boomerang.job.outcome", "lease_lost")
            return None
        span.set_attribute("boomerang.job.outcome", "succeeded" if outcome.succeeded else "failed")
        if outcome.error is not None:
            # The exception's type, as ``_call_job_function`` writes it first; not its message,
            # which is the tenant's own data.
            tracing.failed(span, outcome.error.partition(":")[0])
        return dataclasses.replace(outcome, span=span)


def _call_job_function(
    claimed: ClaimedJob, report: Callable[[dict[str, Any]], None]
) -> Outcome | None:
    job_type = get_job_type(claimed.type)
    try:
        if job_type is None:
            raise LookupError(f"no job type {claimed.type!r} is registered on this worker")
        result = job_type.function(dict(claimed.input), JobContext(str(claimed.id), report))
        check_storable(result)
        return Outcome(result=result)
    except LeaseLost:
        log.warning("job %s: lease lost, leaving it to the worker that took over", claimed.id)
        return None
    except Exception as exc:
        log.info("job %s failed: %s", claimed.id, exc)
        return Outcome(error=f"{type(exc).__name__}: {exc}".replace("\x00", "\ufffd"))


def check_storable(result: Any) -> None:
    """Fail here, readably, on a result Postgres' JSONB would refuse later."""
    text = json.dumps(result, allow_nan=False)  # ValueError for NaN and Infinity
    if "\\u0000" in text:
        raise ValueError("the result contains a NUL character, which cannot be stored")


# Lease-checked changes to a running job, each one statement returning the row as changed, so a
# takeover cannot land between a read and the write. Written out once: they run for every job.
# (Its columns are named, not *: a prepared statement's result cannot change shape when a
# migration adds a column under a worker still running.) It also takes the job's ordering-key
# lock and reads the tenant's filtered callbacks, which publishing the job's end needs next:
# two round trips fewer for every job.
_FINISH = PreparedStatement(
    "boomerang_finish_job",
    text(
        f"""
        UPDATE job
        SET status = :status, result = CAST(:result AS jsonb), error = :error,
            finished_at = :now, locked_until = NULL, lease_id = NULL
        WHERE id = :id AND lease_id = :lease_id AND status = 'running'
        RETURNING {", ".join(f"job.{column.name}" for column in Job.__table__.columns)},
            pg_advisory_xact_lock(CAST(:ordering_lock AS bigint)) AS ordering_locked,
            (SELECT coalesce(json_agg(json_build_array(callback.id, callback.filter)), '[]')
             FROM callback
             WHERE callback.tenant_id = job.tenant_id AND callback.filter IS NOT NULL
               AND callback.enabled) AS callback_filters
        """
    ),
)
_PROGRESS = text(
    """
    UPDATE job SET progress = CAST(:progress AS jsonb), locked_until = :locked_until
    WHERE id = :id AND lease_id = :lease_id AND status = 'running'
    RETURNING *
    """
)


# What ``_as_job`` keeps of a returned row: a column a newer migration added must not stop a
# worker still running the code from before it from recording a job's end (a rolling deploy).
_JOB_COLUMNS = frozenset(Job.__table__.columns.keys())


def _as_job(row: Any) -> Job:
    """A returned row as a Job that is never added to a session (events are rendered from it)."""
    values = {key: value for key, value in row._mapping.items() if key in _JOB_COLUMNS}
    values["status"] = JobStatus(values["status"])
    return Job(**values)


def record_progress(
    session: Session,
    claimed: ClaimedJob,
    progress: dict[str, Any],
    now: datetime,
    settings: Settings,
) -> bool:
    """Store progress, extend the lease and raise ``job.progress``; False if the lease is lost."""
    row = (
        session.connection()
        .execute(
            _PROGRESS,
            {
                "id": claimed.id,
                "lease_id": claimed.lease_id,
                "progress": json.dumps(progress),
                "locked_until": now + timedelta(seconds=settings.job_lease_seconds),
            },
        )
        .one_or_none()
    )
    if row is None:
        return False
    job = _as_job(row)
    outbox.publish(
        session,
        tenant_id=job.tenant_id,
        event_type=events.JOB_PROGRESS,
        data=JobSchema().dump(job),
        now=now,
        job_id=job.id,
        subscribers=True,
        # Kept even when no callback listens: streams and long polls read progress from here.
    )
    return True


def finish_job(session: Session, claimed: ClaimedJob, now: datetime, outcome: Outcome) -> bool:
    """Record the outcome and, in the same transaction, the events it raises (the outbox)."""
    ended = _ended(outcome, now)
    # A job's events are ordered by the job's id (app/services/outbox.py).
    ordering = [(claimed.tenant_id, str(claimed.id))] if claimed.tenant_id else []
    row = _FINISH.execute(
        session.connection(),
        {
            "id": claimed.id,
            "lease_id": claimed.lease_id,
            "status": ended["status"].value,
            "result": json.dumps(ended["result"]),
            "error": ended["error"],
            "now": now,
            "ordering_lock": lock_key(*ordering[0]) if ordering else None,
        },
    ).one_or_none()
    if row is None:
        return False  # the lease expired and another worker owns the job now
    note_held(session, ordering)
    filters = [(uuid.UUID(callback_id), text) for callback_id, text in row.callback_filters]
    # Recorded after the run's span ended (with the next claim), but what it raises is the run's.
    with tracing.within(outcome.span):
        _raise_end(session, _as_job(row), now, callback_filters=filters)
    return True


def _ended(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """A job's columns once it has ended with ``outcome``."""
    return {
        "status": JobStatus.SUCCEEDED if outcome.succeeded else JobStatus.FAILED,
        "result": outcome.result if outcome.succeeded else None,
        "error": outcome.error,
        "finished_at": now,
        "locked_until": None,
        "lease_id": None,
    }


def _raise_end(
    session: Session,
    job: Job,
    now: datetime,
    callback_filters: Sequence[tuple[uuid.UUID, str]] | None = None,
) -> None:
    """Count the job's end and raise ``job.succeeded`` or ``job.failed`` to whoever listens."""
    duration = (now - job.started_at).total_seconds() if job.started_at else None
    after_commit(session, metrics.job_finished, job.type, job.status.value, duration)
    outbox.publish(
        session,
        tenant_id=job.tenant_id,
        event_type=events.JOB_SUCCEEDED if job.status == JobStatus.SUCCEEDED else events.JOB_FAILED,
        data=JobSchema().dump(job),
        now=now,
        job_id=job.id,
        subscribers=True,
        extra_urls=[job.callback_url] if job.callback_url else [],
        callback_filters=callback_filters,
    )


@dataclass
class DrainStats:
    """What one drain did."""

    jobs: int = 0
    succeeded: int = 0


@dataclass(frozen=True)
class _Finished:
    claimed: ClaimedJob
    outcome: Outcome
    ran_at: float  # monotonic, when the job's run ended


class JobDrain:
    """Runs queued jobs one after another in one worker process."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        waker: Waker,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.waker = waker
        self.clock = clock
        self._stranded_checked_at = float("-inf")

    def drain(self, budget_seconds: float = DRAIN_SECONDS) -> DrainStats:
        """Run queued jobs until none are left or the budget is spent, then return."""
        stats = DrainStats()
        deadline = time.monotonic() + budget_seconds
        with self.session_factory() as session:
            try:
                finished: _Finished | None = None
                key_set_at: float | None = None
                while True:
                    take_more = time.monotonic() < deadline
                    claimed, more = self._record_and_claim(session, finished, take_more)
                    finished = None
                    if claimed is None and take_more:
                        key_set_at = None  # lingering and stopping rewrite the key
                        claimed, more = self._linger(session)
                    if claimed is None and take_more:
                        # Clear the key, then look once more: work committed after this look
                        # finds the key gone and sends a wake.
                        self.waker.about_to_stop()
                        claimed, more = self._record_and_claim(session, None, True)
                    if claimed is None:
                        if not take_more:
                            self._hand_over(session)
                        break
                    if key_set_at is None or time.monotonic() - key_set_at >= KEY_REFRESH_SECONDS:
                        # Set a moment ago, the key still outlives a short job: a run of short
                        # jobs costs one Redis round trip per refresh, not one per job.
                        self.waker.draining(for_ms=SHORT_JOB_MS)
                        key_set_at = time.monotonic()
                    if more:
                        self.waker.ask_for_help()
                    outcome = run_claimed(session, self.settings, claimed, self.clock)
                    if outcome is not None:
                        finished = _Finished(claimed, outcome, time.monotonic())
                        stats.jobs += 1
                        stats.succeeded += int(outcome.succeeded)
            except BaseException:
                # Whatever stopped this drain, it no longer holds the key.
                self.waker.about_to_stop()
                raise
        return stats

    def _record_and_claim(
        self, session: Session, finished: _Finished | None, claim: bool
    ) -> tuple[ClaimedJob | None, bool]:
        """In one transaction: the finished job's outcome and events, and the next claim."""

        def work() -> tuple[ClaimedJob | None, bool]:
            now = self.clock()
            if finished is not None:
                with bind_log_context(job_id=finished.claimed.id):
                    finish_job(session, finished.claimed, now, finished.outcome)
            if not claim:
                return None, False
            if time.monotonic() - self._stranded_checked_at >= STRANDED_CHECK_SECONDS:
                # An indexed probe of unfinished jobs, once a second: cheap beside the claims.
                requeue_stranded_jobs(session, now, self.settings)
                self._stranded_checked_at = time.monotonic()
            return claim_next_job(session, now, self.settings)

        if finished is None:
            result = work()
            session.commit()
            return result
        # The job has run; keep trying to record it rather than run it again after an outage.
        return commit_with_retry(
            session, work, give_up_after_seconds=self.settings.job_lease_seconds / 2
        )

    def _linger(self, session: Session) -> tuple[ClaimedJob | None, bool]:
        """Nothing queued: keep the key and look again for a moment before giving up."""
        self.waker.draining()
        until = time.monotonic() + LINGER_SECONDS
        while time.monotonic() < until:
            time.sleep(LINGER_POLL_SECONDS)
            claimed, more = self._record_and_claim(session, None, True)
            if claimed is not None:
                return claimed, more
        return None, False

    def _hand_over(self, session: Session) -> None:
        """Out of time: let a fresh drain take what is queued now."""
        self.waker.about_to_stop()
        queued = has_queued_jobs(session)
        session.commit()
        if queued:
            self.waker.wake()
