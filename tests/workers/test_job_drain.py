"""The job drain on real Postgres and Redis: it runs what is queued, records the ends of quick
jobs together with the next claim, and a slow job holds up no other job."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from app.jobtypes import load_job_modules
from app.models import Delivery, Job, JobStatus, Message, Tenant
from app.queues import JOB_WAKE, WAKE_TTL_SECONDS, Waker
from tests import custom_jobs
from tests.factories import make_callback, make_job
from workers.running import (
    KEY_REFRESH_SECONDS,
    DrainStats,
    JobDrain,
    claim_jobs,
    release_jobs,
)


def job_waker(settings, sent: list[str]) -> Waker:
    return Waker(settings.redis_url, lambda: sent.append("wake"), JOB_WAKE)


def only_this_tests_jobs_queued(session: Session) -> None:
    """A drain claims any queued job in the database, and this worker's database is shared with
    tests that commit (a stack's stranded job, say). Inside the test's rolled-back transaction,
    set theirs aside so the counts below are this test's alone."""
    session.execute(
        update(Job).where(Job.status == JobStatus.QUEUED).values(status=JobStatus.FAILED)
    )


def drain_sending(engine, settings, session: Session) -> tuple[DrainStats, list[str]]:
    """Drain on ``session``: what it did, and every statement it sent."""
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 (a one-line listener)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        stats = JobDrain(
            settings, lambda: contextlib.nullcontext(session), job_waker(settings, [])
        ).drain()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return stats, statements


def test_a_drain_runs_every_queued_job_and_raises_each_ones_events(db_session, settings, tenant):
    only_this_tests_jobs_queued(db_session)
    make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    jobs = [make_job(db_session, tenant.row, "echo", {"n": n}) for n in range(3)]
    db_session.commit()
    sent: list[str] = []
    drain = JobDrain(
        settings, lambda: contextlib.nullcontext(db_session), job_waker(settings, sent)
    )

    stats = drain.drain()

    assert (stats.jobs, stats.succeeded) == (3, 3)
    db_session.expire_all()
    assert {db_session.get(Job, job.id).status for job in jobs} == {JobStatus.SUCCEEDED}
    raised = db_session.scalars(
        select(Message.event_type).where(Message.tenant_id == tenant.row.id)
    )
    assert sorted(raised) == ["job.succeeded"] * 3
    # Done and nothing left: the key is gone, so the next submission wakes a worker at once.
    assert redis.Redis.from_url(settings.redis_url).exists(JOB_WAKE.draining) == 0


class CountingWaker(Waker):
    """Counts the key refreshes made before jobs (the ones with a short lifetime)."""

    refreshes = 0

    def draining(self, for_ms: int | None = None) -> None:
        self.refreshes += for_ms is not None
        super().draining(for_ms)


def test_a_run_of_short_jobs_refreshes_the_key_once_in_a_while_not_per_job(
    db_session, settings, tenant
):
    only_this_tests_jobs_queued(db_session)
    for n in range(30):
        make_job(db_session, tenant.row, "echo", {"n": n})
    db_session.commit()
    waker = CountingWaker(settings.redis_url, lambda: None, JOB_WAKE)
    drain = JobDrain(settings, lambda: contextlib.nullcontext(db_session), waker)
    started = time.monotonic()

    stats = drain.drain()

    assert stats.jobs == 30
    took = time.monotonic() - started
    # At least once, and no more than once per refresh interval (plus the first).
    assert 1 <= waker.refreshes <= 1 + took / KEY_REFRESH_SECONDS


def test_a_busy_drain_takes_over_a_job_whose_worker_died_without_waiting_for_the_sweep(
    db_session, settings, tenant
):
    only_this_tests_jobs_queued(db_session)
    db_session.execute(
        update(Job).where(Job.status == JobStatus.RUNNING).values(status=JobStatus.FAILED)
    )
    stranded = make_job(db_session, tenant.row, "echo", {"n": 1})
    # Its worker died mid-run: running, and its lease ran out a moment ago.
    stranded.status = JobStatus.RUNNING
    stranded.attempts = 1
    stranded.lease_id = uuid.uuid4()
    stranded.locked_until = datetime.now(UTC) - timedelta(seconds=1)
    db_session.commit()
    drain = JobDrain(settings, lambda: contextlib.nullcontext(db_session), job_waker(settings, []))

    stats = drain.drain()

    assert stats.jobs == 1
    db_session.expire_all()
    taken_over = db_session.get(Job, stranded.id)
    assert (taken_over.status, taken_over.attempts) == (JobStatus.SUCCEEDED, 2)


def test_a_drain_out_of_time_hands_what_is_queued_to_a_fresh_wake(db_session, settings, tenant):
    only_this_tests_jobs_queued(db_session)
    make_job(db_session, tenant.row, "echo")
    db_session.commit()
    sent: list[str] = []
    drain = JobDrain(
        settings, lambda: contextlib.nullcontext(db_session), job_waker(settings, sent)
    )

    stats = drain.drain(budget_seconds=0)

    assert stats.jobs == 0
    assert sent == ["wake"]


def test_a_slow_job_holds_up_no_other_job(engine, settings, committed_tenant):
    load_job_modules(["tests.custom_jobs"])
    custom_jobs.released.clear()
    with Session(engine) as session:
        owner = session.get(Tenant, committed_tenant)
        queued_at = datetime.now(UTC)
        slow_id = make_job(session, owner, "wait", {"seconds": 20}, enqueued_at=queued_at).id
        # Queued after the slow one: a FIFO queue would put them behind it.
        short = [
            make_job(
                session, owner, "echo", {"n": n}, enqueued_at=queued_at + timedelta(seconds=1)
            ).id
            for n in range(2)
        ]
        session.commit()
    factory = lambda: Session(engine, expire_on_commit=False)  # noqa: E731 (a factory, inline)
    sent: list[str] = []
    busy = JobDrain(settings, factory, job_waker(settings, sent))
    slow_drain = threading.Thread(target=lambda: busy.drain(budget_seconds=5))
    slow_drain.start()
    try:
        with Session(engine) as session:
            deadline = time.monotonic() + 10
            while session.get(Job, slow_id, populate_existing=True).status != JobStatus.RUNNING:
                assert time.monotonic() < deadline, "the slow job never started"
                time.sleep(0.05)
            # The watchdog hands the short jobs back on a session of its own: a drain started
            # before that lands would find nothing queued and stop after its linger.
            deadline = time.monotonic() + 10
            while any(
                session.get(Job, job_id, populate_existing=True).status != JobStatus.QUEUED
                for job_id in short
            ):
                assert time.monotonic() < deadline, "the short jobs were never handed back"
                time.sleep(0.05)
        # While the slow job runs, the key it set before it lapses: new work wakes another
        # process. A key kept for the whole run (WAKE_TTL_SECONDS) would outlast this wait.
        keys = redis.Redis.from_url(settings.redis_url)
        deadline = time.monotonic() + WAKE_TTL_SECONDS / 2
        while keys.exists(JOB_WAKE.draining):
            assert time.monotonic() < deadline, "the key outlived a short job"
            time.sleep(0.05)

        stats = JobDrain(settings, factory, job_waker(settings, [])).drain(budget_seconds=5)

        assert stats.jobs == 2
        with Session(engine) as session:
            statuses = {session.get(Job, job_id).status for job_id in short}
            assert statuses == {JobStatus.SUCCEEDED}
            assert session.get(Job, slow_id).status == JobStatus.RUNNING
    finally:
        custom_jobs.released.set()
        slow_drain.join(30)
    with Session(engine) as session:
        assert session.get(Job, slow_id).status == JobStatus.SUCCEEDED


def test_a_job_run_by_a_drain_counts_its_attempt_once(db_session, settings, tenant):
    job = make_job(db_session, tenant.row, "echo")
    db_session.commit()
    JobDrain(settings, lambda: contextlib.nullcontext(db_session), job_waker(settings, [])).drain()
    db_session.expire_all()
    assert db_session.get(Job, job.id).attempts == 1


def test_a_job_end_takes_its_key_and_reads_the_filters_in_the_statement_that_ends_it(
    db_session, settings, tenant, engine
):
    only_this_tests_jobs_queued(db_session)
    skipped = make_callback(
        db_session, tenant.row, "http://127.0.0.1:1/skipped", filter='type == "job.failed"'
    )
    heard = make_callback(
        db_session, tenant.row, "http://127.0.0.1:1/heard", filter='type == "job.succeeded"'
    )
    job = make_job(db_session, tenant.row, "echo", {"n": 1})
    db_session.commit()
    stats, statements = drain_sending(engine, settings, db_session)

    assert stats.jobs == 1
    # Neither asked for again: the finish statement took the lock and read the filters.
    asked = ("EXECUTE boomerang_lock_ordering_keys", "EXECUTE boomerang_callback_filters")
    assert not [s for s in statements if s.startswith(asked)]
    message = db_session.scalar(select(Message).where(Message.job_id == job.id))
    sent_to = set(
        db_session.scalars(select(Delivery.callback_id).where(Delivery.message_id == message.id))
    )
    assert sent_to == {heard.id}
    assert skipped.id not in sent_to


def test_quick_jobs_are_leased_and_recorded_a_batch_at_a_time(
    db_session, settings, tenant, engine, monkeypatch
):
    # An echo counts as quick, and its end waits for the batch, however busy the host.
    monkeypatch.setattr("workers.running.QUICK_JOB_MS", 1000)
    monkeypatch.setattr("workers.running.RECORD_WITHIN_SECONDS", 10)
    only_this_tests_jobs_queued(db_session)
    jobs = [make_job(db_session, tenant.row, "echo", {"n": n}) for n in range(8)]
    db_session.commit()
    stats, statements = drain_sending(engine, settings, db_session)

    assert stats.jobs == 8
    db_session.expire_all()
    assert {db_session.get(Job, job.id).status for job in jobs} == {JobStatus.SUCCEEDED}
    finishes = [s for s in statements if s.startswith("EXECUTE boomerang_finish_jobs")]
    claims = [s for s in statements if s.startswith("EXECUTE boomerang_claim_jobs")]
    # Once the first echo has run, the type is known to be quick, so the ends wait for each other
    # (unless an echo runs past SHORT_JOB_MS on a busy machine and the watchdog steps in).
    assert 1 <= len(finishes) <= 3
    # One claim leased all eight; the others looked for more (and lingered a while).
    assert claims and not [s for s in statements if "boomerang_claim_job(" in s]


def quick_then_slow(engine, settings, tenant_id) -> tuple[list[uuid.UUID], JobDrain]:
    """Queued in this order: a quick "wait" (so the drain learns the type is quick), an echo, a
    "wait" that runs until released, and an echo; and a drain with sessions of its own."""
    load_job_modules(["tests.custom_jobs"])
    custom_jobs.released.clear()
    with Session(engine) as session:
        owner = session.get(Tenant, tenant_id)
        queued_at = datetime.now(UTC)
        inputs = [("wait", {"seconds": 0}), ("echo", {}), ("wait", {"seconds": 20}), ("echo", {})]
        ids = [
            make_job(
                session, owner, job_type, data, enqueued_at=queued_at + timedelta(seconds=n)
            ).id
            for n, (job_type, data) in enumerate(inputs)
        ]
        session.commit()
    factory = lambda: Session(engine, expire_on_commit=False)  # noqa: E731 (a factory, inline)
    return ids, JobDrain(settings, factory, job_waker(settings, []))


def test_a_job_that_runs_long_hands_the_rest_of_its_batch_back(engine, settings, committed_tenant):
    ids, drain = quick_then_slow(engine, settings, committed_tenant)
    quick_wait, echo_before, slow, echo_after = ids
    # One claim takes all four: the drain runs "wait" once quickly, so it counts that type as
    # quick, and the echo before the slow run waits to be recorded with what follows.
    running = threading.Thread(target=lambda: drain.drain(budget_seconds=5))
    running.start()
    try:
        with Session(engine) as session:

            def job(job_id):
                return session.get(Job, job_id, populate_existing=True)

            deadline = time.monotonic() + 10
            while job(echo_after).lease_id is not None or job(echo_before).finished_at is None:
                assert time.monotonic() < deadline, "the batch was never handed back"
                time.sleep(0.05)
            # While the slow job runs: the end before it is recorded, the job after it is queued
            # again as if never claimed, and the slow one is still this drain's.
            assert job(echo_before).status == JobStatus.SUCCEEDED
            assert job(quick_wait).status == JobStatus.SUCCEEDED
            handed_back = job(echo_after)
            assert (handed_back.status, handed_back.attempts) == (JobStatus.QUEUED, 0)
            assert job(slow).status == JobStatus.RUNNING
    finally:
        custom_jobs.released.set()
        running.join(30)
    with Session(engine) as session:
        ended = [session.get(Job, job_id) for job_id in ids]
        assert [job.status for job in ended] == [JobStatus.SUCCEEDED] * 4
        # The handed-back job ran once, after the slow one.
        assert [job.attempts for job in ended] == [1, 1, 1, 1]


def test_what_the_watchdog_could_not_hand_back_is_released_not_run(
    engine, settings, committed_tenant, monkeypatch
):
    # The echo's end waits for the watchdog, however long the quick "wait" or the gap after the
    # echo takes on a busy host: recorded before the slow job, the watchdog would have no end.
    monkeypatch.setattr("workers.running.QUICK_JOB_MS", 1000)
    monkeypatch.setattr("workers.running.RECORD_WITHIN_SECONDS", 10)
    ids, drain = quick_then_slow(engine, settings, committed_tenant)
    _, echo_before, slow, echo_after = ids
    tried: list[tuple[list, list]] = []

    def postgres_away(ended, unstarted):
        tried.append(([f.claimed.id for f in ended], [job.id for job in unstarted]))
        return False

    drain._watchdog._hand_back = postgres_away
    released: list[str] = []
    listener = lambda *args: released.append(args[2])  # noqa: E731 (a one-line listener)
    running = threading.Thread(target=lambda: drain.drain(budget_seconds=5))
    running.start()
    try:
        deadline = time.monotonic() + 10
        while not tried:
            assert time.monotonic() < deadline, "the watchdog never tried"
            time.sleep(0.05)
        event.listen(engine, "before_cursor_execute", listener)
    finally:
        custom_jobs.released.set()
        running.join(30)
        event.remove(engine, "before_cursor_execute", listener)
    assert tried == [([echo_before], [echo_after])]
    # After the slow job, the drain recorded the end the watchdog held and put the job it had
    # not started back on the queue, before it ran that job again under a new claim.
    after_slow = [s for s in released if s.startswith("EXECUTE boomerang_")]
    release = next(n for n, s in enumerate(after_slow) if "boomerang_release_jobs" in s)
    claim = next(n for n, s in enumerate(after_slow) if "boomerang_claim_jobs" in s)
    assert release < claim
    with Session(engine) as session:
        assert [session.get(Job, job_id).status for job_id in ids] == [JobStatus.SUCCEEDED] * 4
        assert session.get(Job, slow).attempts == 1


def test_releasing_jobs_queues_them_as_they_were_and_only_under_their_lease(
    db_session, settings, tenant
):
    only_this_tests_jobs_queued(db_session)
    jobs = [make_job(db_session, tenant.row, "echo", {"n": n}) for n in range(2)]
    claimed, more = claim_jobs(db_session, datetime.now(UTC), settings, limit=5)
    assert {job.id for job in claimed} == {job.id for job in jobs} and not more
    someone_elses = dataclasses.replace(claimed[0], lease_id=uuid.uuid4())

    release_jobs(db_session, [someone_elses])
    db_session.expire_all()
    assert db_session.get(Job, jobs[0].id).status == JobStatus.RUNNING

    release_jobs(db_session, claimed)
    db_session.expire_all()
    for job in jobs:
        released = db_session.get(Job, job.id)
        assert (released.status, released.attempts, released.lease_id) == (
            JobStatus.QUEUED,
            0,
            None,
        )
