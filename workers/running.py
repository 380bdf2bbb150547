"""Running jobs: a drain claims queued jobs, runs them, and records their outcomes together with
the next claim.

Every step is lease-checked: a worker whose lease ran out (it was too slow, or cut off from
Postgres) finds the job taken over and records nothing. The outcome and the events it raises are
written in one transaction (the outbox), so a job ends if and only if its events exist.

For short jobs the bookkeeping costs more than the job, so a drain leases a few queued jobs at
once and records the ends of quick ones together: one transaction for the ends of a batch and
the next claim. A slow job still holds up no other job: before a job that may take a while,
what ended before it is recorded; if a job runs long anyway, a watchdog thread records what
waits and puts the jobs not yet started back on the queue; and the wake key lapses while a job
runs long (see app/queues.py), so new work wakes another process instead of waiting.
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
from workers.job_watchdog import Finished, Watchdog

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
# A drain leases up to this many queued jobs at once: for short jobs the claim, the commit and
# the wakes then cost a round trip per batch, not per job. A worker killed mid-batch leaves
# them to be taken over when their lease runs out, as it leaves the job it was running.
CLAIM_BATCH = 10
# A job type whose last run in this process took less than this may run while the ends of the
# jobs before it wait to be recorded together with its own ...
QUICK_JOB_MS = 5
# ... but no end waits longer than this for the jobs after it.
RECORD_WITHIN_SECONDS = 0.02


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


# Lease the oldest queued jobs nobody holds (up to :limit), and say whether more are queued (so
# the drain can ask for help). SKIP LOCKED lets any number of drains claim side by side.
_CLAIM_NEXT = PreparedStatement(
    "boomerang_claim_jobs",
    text(
        """
    WITH next AS (
        SELECT id FROM job
        WHERE status = 'queued' AND attempts < max_attempts AND (:any_id OR id = :only)
        ORDER BY enqueued_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE job
    SET status = 'running', attempts = job.attempts + 1, lease_id = :lease_id,
        locked_until = :locked_until, started_at = :now
    FROM next
    WHERE job.id = next.id
    RETURNING job.id, job.type, job.input, job.attempts, job.traceparent, job.tenant_id,
              job.enqueued_at,
              EXISTS (SELECT 1 FROM job queued
                      WHERE queued.status = 'queued'
                        AND queued.id NOT IN (SELECT id FROM next)) AS more
    """
    ),
)


def claim_jobs(
    session: Session,
    now: datetime,
    settings: Settings,
    limit: int = 1,
    only: uuid.UUID | None = None,
) -> tuple[list[ClaimedJob], bool]:
    """Lease up to ``limit`` of the oldest queued jobs (or only ``only``, if it is queued), in
    queue order; (the jobs, whether others are queued)."""
    lease_id = uuid.uuid4()
    rows = _CLAIM_NEXT.execute(
        session.connection(),
        {
            "any_id": only is None,
            "only": only,
            "limit": limit,
            "lease_id": lease_id,
            "now": now,
            "locked_until": now + timedelta(seconds=settings.job_lease_seconds),
        },
    ).all()
    # In queue order, as ORDER BY enqueued_at picked them (NULLs last).
    rows = sorted(rows, key=lambda row: (row.enqueued_at is None, row.enqueued_at or 0))
    claimed = [
        ClaimedJob(
            row.id, row.type, row.input, lease_id, row.attempts, row.traceparent, row.tenant_id
        )
        for row in rows
    ]
    return claimed, any(row.more for row in rows)


def claim_next_job(
    session: Session, now: datetime, settings: Settings, only: uuid.UUID | None = None
) -> tuple[ClaimedJob | None, bool]:
    """Lease the oldest queued job (or only ``only``, if it is queued); (the job or None,
    whether others are queued)."""
    claimed, more = claim_jobs(session, now, settings, only=only)
    return (claimed[0] if claimed else None), more


# Jobs a drain leased but has not started go back to the queue as they were: their attempt
# was never made.
_RELEASE = PreparedStatement(
    "boomerang_release_jobs",
    text(
        """
    UPDATE job
    SET status = 'queued', attempts = job.attempts - 1, lease_id = NULL, locked_until = NULL
    WHERE id = ANY(CAST(:ids AS uuid[])) AND lease_id = :lease_id AND status = 'running'
    """
    ),
)


def release_jobs(session: Session, claimed: Sequence[ClaimedJob]) -> None:
    """Queue again jobs this worker leased and never started (lease-checked)."""
    by_lease: dict[uuid.UUID, list[str]] = {}
    for job in claimed:
        by_lease.setdefault(job.lease_id, []).append(str(job.id))
    for lease_id, ids in by_lease.items():
        _RELEASE.execute(session.connection(), {"ids": ids, "lease_id": lease_id})
    if claimed:
        wake_jobs(session)


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


# Lease-checked changes to running jobs, each one statement returning the rows as changed, so a
# takeover cannot land between a read and the write. Written out once: they run for every job.
# (Its columns are named, not *: a prepared statement's result cannot change shape when a
# migration adds a column under a worker still running.) The finish ends any number of jobs at
# once, and also takes each job's ordering-key lock and reads its tenant's filtered callbacks,
# which publishing the job's end needs next: two round trips fewer for every job.
_FINISH = PreparedStatement(
    "boomerang_finish_jobs",
    text(
        f"""
        UPDATE job
        SET status = ended.status, result = CAST(ended.result AS jsonb), error = ended.error,
            finished_at = :now, locked_until = NULL, lease_id = NULL
        FROM unnest(CAST(:ids AS uuid[]), CAST(:lease_ids AS uuid[]),
                    CAST(:statuses AS text[]), CAST(:results AS text[]),
                    CAST(:errors AS text[]), CAST(:ordering_locks AS bigint[]))
             AS ended(id, lease_id, status, result, error, ordering_lock)
        WHERE job.id = ended.id AND job.lease_id = ended.lease_id AND job.status = 'running'
        RETURNING {", ".join(f"job.{column.name}" for column in Job.__table__.columns)},
            pg_advisory_xact_lock(ended.ordering_lock) AS ordering_locked,
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


# A job as its events show it. One instance for every job: building a marshmallow schema copies
# its declared fields, which took 7 % of the jobs worker's own CPU in an end-to-end burst of quick
# jobs. Dumping keeps no state on the instance.
_JOB_DOCUMENT = JobSchema()


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
        data=_JOB_DOCUMENT.dump(job),
        now=now,
        job_id=job.id,
        subscribers=True,
        # Kept even when no callback listens: streams and long polls read progress from here.
    )
    return True


def finish_job(session: Session, claimed: ClaimedJob, now: datetime, outcome: Outcome) -> bool:
    """Record the outcome and, in the same transaction, the events it raises (the outbox)."""
    return finish_jobs(session, [(claimed, outcome)], now) == 1


def finish_jobs(
    session: Session, finished: Sequence[tuple[ClaimedJob, Outcome]], now: datetime
) -> int:
    """Record each outcome and, in the same transaction, the events it raises (the outbox); how
    many were recorded (a job whose lease expired belongs to another worker now)."""
    if not finished:
        return 0
    ends = [(claimed, outcome, _ended(outcome, now)) for claimed, outcome in finished]
    rows = _FINISH.execute(
        session.connection(),
        {
            "ids": [str(claimed.id) for claimed, _, _ in ends],
            "lease_ids": [str(claimed.lease_id) for claimed, _, _ in ends],
            "statuses": [ended["status"].value for _, _, ended in ends],
            "results": [json.dumps(ended["result"]) for _, _, ended in ends],
            "errors": [ended["error"] for _, _, ended in ends],
            # A job's events are ordered by the job's id (app/services/outbox.py).
            "ordering_locks": [
                lock_key(claimed.tenant_id, str(claimed.id)) if claimed.tenant_id else None
                for claimed, _, _ in ends
            ],
            "now": now,
        },
    ).all()
    ended_rows = {row.id: row for row in rows}
    for claimed, outcome, _ in ends:
        row = ended_rows.get(claimed.id)
        if row is None:
            continue
        if claimed.tenant_id:
            note_held(session, [(claimed.tenant_id, str(claimed.id))])
        filters = [(uuid.UUID(callback_id), text) for callback_id, text in row.callback_filters]
        # Recorded after the run's span ended, but what it raises is the run's.
        with tracing.within(outcome.span), bind_log_context(job_id=claimed.id):
            _raise_end(session, _as_job(row), now, callback_filters=filters)
    return len(ended_rows)


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
        data=_JOB_DOCUMENT.dump(job),
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


class JobDrain:
    """Runs queued jobs one after another in one worker process.

    It leases up to ``CLAIM_BATCH`` jobs at a time (fewer after a job ran long). The ends of
    quick jobs (of a type whose last run here took under ``QUICK_JOB_MS``) are recorded
    together, with the next claim, in one transaction; any other job's end is recorded before
    the next job starts. A job that runs long has the rest of its batch handed back by the
    watchdog.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        waker: Waker,
        clock: Callable[[], datetime] = utcnow,
        hand_back_sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.waker = waker
        self.clock = clock
        # The watchdog's sessions. Best from a pool of their own: taking the connection the
        # running job's progress reports would reuse makes those open a new one, which fails at
        # once while Postgres does not answer, where the pooled one would wait for it.
        self.hand_back_sessions = hand_back_sessions or session_factory
        self._stranded_checked_at = float("-inf")
        self._key_set_at: float | None = None
        self._last_run_ms: dict[str, float] = {}
        self._watchdog = Watchdog(self._hand_back, overdue_ms=SHORT_JOB_MS)
        # How many jobs the next claim leases: one after a batch that had a job run long (its
        # queue may be all slow jobs, each of which would hand the rest back), doubling after
        # each batch that did not, up to CLAIM_BATCH.
        self._claim_size = CLAIM_BATCH

    def drain(self, budget_seconds: float = DRAIN_SECONDS) -> DrainStats:
        """Run queued jobs until none are left or the budget is spent, then return."""
        stats = DrainStats()
        deadline = time.monotonic() + budget_seconds
        with self.session_factory() as session:
            try:
                finished: list[Finished] = []
                to_release: list[ClaimedJob] = []
                self._key_set_at = None
                while True:
                    take_more = time.monotonic() < deadline
                    batch, more = self._record_and_claim(session, finished, take_more, to_release)
                    finished, to_release = [], []
                    if not batch and take_more:
                        self._key_set_at = None  # lingering and stopping rewrite the key
                        batch, more = self._linger(session)
                    if not batch and take_more:
                        # Clear the key, then look once more: work committed after this look
                        # finds the key gone and sends a wake.
                        self.waker.about_to_stop()
                        batch, more = self._record_and_claim(session, [], True)
                    if not batch:
                        if not take_more:
                            self._hand_over(session)
                        break
                    if more:
                        self.waker.ask_for_help()
                    finished, to_release = self._run_batch(session, batch, stats)
            except BaseException:
                # Whatever stopped this drain, it no longer holds the key.
                self.waker.about_to_stop()
                raise
        return stats

    def _run_batch(
        self, session: Session, batch: Sequence[ClaimedJob], stats: DrainStats
    ) -> tuple[list[Finished], list[ClaimedJob]]:
        """Run a claimed batch; the ends still to record, and the jobs still to release."""
        self._watchdog.watch(batch)
        try:
            while (claimed := self._watchdog.next_job()) is not None:
                oldest_end = self._watchdog.oldest_end()
                if oldest_end is not None and (
                    self._last_run_ms.get(claimed.type, float("inf")) >= QUICK_JOB_MS
                    or time.monotonic() - oldest_end >= RECORD_WITHIN_SECONDS
                ):
                    # This one may take a while: what ended before it is recorded first.
                    self._record_and_claim(session, self._watchdog.take_ended(), claim=False)
                if (
                    self._key_set_at is None
                    or time.monotonic() - self._key_set_at >= KEY_REFRESH_SECONDS
                ):
                    # Set a moment ago, the key still outlives a short job: a run of short
                    # jobs costs one Redis round trip per refresh, not one per job.
                    self.waker.draining(for_ms=SHORT_JOB_MS)
                    self._key_set_at = time.monotonic()
                self._watchdog.start(claimed)
                started = time.monotonic()
                outcome = None
                try:
                    outcome = run_claimed(session, self.settings, claimed, self.clock)
                finally:
                    ran_at = time.monotonic()
                    self._last_run_ms[claimed.type] = (ran_at - started) * 1000
                    self._watchdog.end(
                        None if outcome is None else Finished(claimed, outcome, ran_at)
                    )
                if outcome is not None:
                    stats.jobs += 1
                    stats.succeeded += int(outcome.succeeded)
        except BaseException:
            # Hand back what this drain holds, once and without waiting for Postgres: the
            # drain is stopping, and what cannot be handed back is taken over after its lease.
            ended, unstarted, _ = self._watchdog.stop_watching()
            self._hand_back(ended, unstarted, retry=False)
            raise
        ended, to_release, ran_long = self._watchdog.stop_watching()
        self._claim_size = 1 if ran_long else min(CLAIM_BATCH, 2 * self._claim_size)
        return ended, to_release

    def _hand_back(
        self, ended: list[Finished], unstarted: list[ClaimedJob], retry: bool = True
    ) -> bool:
        """Record ``ended`` and queue ``unstarted`` again, on a session of its own; whether that
        was done."""
        if not (ended or unstarted):
            return True
        try:
            with self.hand_back_sessions() as session:

                def work() -> None:
                    finish_jobs(session, [(f.claimed, f.outcome) for f in ended], self.clock())
                    release_jobs(session, unstarted)

                commit_with_retry(
                    session,
                    work,
                    give_up_after_seconds=self.settings.job_lease_seconds / 2 if retry else 0,
                )
        except Exception:
            log.exception(
                "could not hand back %d ended and %d unstarted jobs", len(ended), len(unstarted)
            )
            return False
        return True

    def _record_and_claim(
        self,
        session: Session,
        finished: list[Finished],
        claim: bool,
        to_release: Sequence[ClaimedJob] = (),
    ) -> tuple[list[ClaimedJob], bool]:
        """In one transaction: the finished jobs' outcomes and events, the release of jobs this
        drain will not run, and the next claim."""

        def work() -> tuple[list[ClaimedJob], bool]:
            now = self.clock()
            finish_jobs(session, [(f.claimed, f.outcome) for f in finished], now)
            release_jobs(session, to_release)
            if not claim:
                return [], False
            if time.monotonic() - self._stranded_checked_at >= STRANDED_CHECK_SECONDS:
                # An indexed probe of unfinished jobs, once a second: cheap beside the claims.
                requeue_stranded_jobs(session, now, self.settings)
                self._stranded_checked_at = time.monotonic()
            return claim_jobs(session, now, self.settings, limit=self._claim_size)

        if not (finished or to_release):
            result = work()
            session.commit()
            return result
        # The jobs have run; keep trying to record them rather than run them again after an
        # outage.
        return commit_with_retry(
            session, work, give_up_after_seconds=self.settings.job_lease_seconds / 2
        )

    def _linger(self, session: Session) -> tuple[list[ClaimedJob], bool]:
        """Nothing queued: keep the key and look again for a moment before giving up."""
        self.waker.draining()
        until = time.monotonic() + LINGER_SECONDS
        while time.monotonic() < until:
            time.sleep(LINGER_POLL_SECONDS)
            claimed, more = self._record_and_claim(session, [], True)
            if claimed:
                return claimed, more
        return [], False

    def _hand_over(self, session: Session) -> None:
        """Out of time: let a fresh drain take what is queued now."""
        self.waker.about_to_stop()
        queued = has_queued_jobs(session)
        session.commit()
        if queued:
            self.waker.wake()
