"""The beat sweep: due retries and lost messages are found again, from Postgres alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from app.models import DeliveryStatus, Job, JobStatus
from tests.factories import make_callback, make_delivery, make_job
from workers.delivery.store import has_due_deliveries
from workers.running import has_queued_jobs, requeue_stranded_jobs


def publish_one(db_session, owner, url, now):
    return make_delivery(db_session, make_callback(db_session, owner, url), now)


def test_a_new_delivery_is_due_at_once(db_session, tenant):
    now = datetime.now(UTC)
    publish_one(db_session, tenant.row, "http://127.0.0.1:1/a", now)
    assert has_due_deliveries(db_session, now) is True


def test_a_retry_is_due_only_when_its_time_comes(db_session, tenant):
    now = datetime.now(UTC)
    delivery = publish_one(db_session, tenant.row, "http://127.0.0.1:1/a", now)
    delivery.attempt_count = 1
    delivery.next_attempt_at = now + timedelta(seconds=5)
    db_session.flush()
    assert has_due_deliveries(db_session, now + timedelta(seconds=4)) is False
    assert has_due_deliveries(db_session, now + timedelta(seconds=6)) is True


def test_finished_and_leased_deliveries_are_not_due(db_session, tenant):
    now = datetime.now(UTC)
    done = publish_one(db_session, tenant.row, "http://127.0.0.1:1/a", now)
    done.status = DeliveryStatus.SUCCEEDED
    leased = publish_one(db_session, tenant.row, "http://127.0.0.1:1/b", now)
    leased.locked_until = now + timedelta(hours=1)
    db_session.flush()
    assert has_due_deliveries(db_session, now + timedelta(minutes=5)) is False


def test_a_delivery_whose_worker_died_is_due_again_once_its_lease_runs_out(db_session, tenant):
    now = datetime.now(UTC)
    delivery = publish_one(db_session, tenant.row, "http://127.0.0.1:1/a", now)
    delivery.locked_until = now + timedelta(seconds=10)  # claimed, then the worker vanished
    db_session.flush()
    assert has_due_deliveries(db_session, now + timedelta(seconds=5)) is False
    assert has_due_deliveries(db_session, now + timedelta(seconds=11)) is True


def test_a_queued_job_is_seen_by_the_sweep_so_a_lost_wake_only_delays_it(db_session, tenant):
    # The probe sees the whole database: set aside, in this rolled-back transaction, any job
    # another test of this process left queued.
    db_session.execute(
        update(Job).where(Job.status == JobStatus.QUEUED).values(status=JobStatus.FAILED)
    )
    assert has_queued_jobs(db_session) is False
    make_job(db_session, tenant.row)
    assert has_queued_jobs(db_session) is True


def test_a_running_job_past_its_lease_is_queued_again(db_session, settings, tenant, sent_tasks):
    now = datetime.now(UTC)
    job = make_job(
        db_session,
        tenant.row,
        status=JobStatus.RUNNING,
        attempts=1,
        enqueued_at=now,
        locked_until=now + timedelta(seconds=30),
    )
    assert requeue_stranded_jobs(db_session, now + timedelta(seconds=10), settings) == 0
    assert requeue_stranded_jobs(db_session, now + timedelta(seconds=31), settings) == 1
    db_session.refresh(job)
    assert (job.status, job.lease_id, job.locked_until) == (JobStatus.QUEUED, None, None)
    db_session.commit()
    assert [t.name for t in sent_tasks] == ["boomerang.run_jobs"]


def test_a_stranded_job_out_of_attempts_fails_and_raises_job_failed(db_session, settings, tenant):
    now = datetime.now(UTC)
    job = make_job(
        db_session,
        tenant.row,
        status=JobStatus.RUNNING,
        attempts=3,
        max_attempts=3,
        started_at=now,
        locked_until=now,
    )
    assert requeue_stranded_jobs(db_session, now + timedelta(seconds=1), settings) == 1
    db_session.refresh(job)
    assert job.status == JobStatus.FAILED
    assert "stopped 3 times" in job.error
