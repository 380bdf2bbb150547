"""Running jobs: outcomes, progress, leases, and the events they raise (outbox)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.jobtypes import load_job_modules
from app.models import Delivery, Job, JobStatus, Message
from tests.factories import make_callback, make_job
from tests.job_runs import execute_job
from workers.running import requeue_stranded_jobs


def messages_for(db_session, job_id):
    return list(
        db_session.scalars(
            select(Message).where(Message.job_id == job_id).order_by(Message.created_at)
        )
    )


def test_an_echo_job_succeeds_and_raises_job_succeeded_to_matching_callbacks(
    db_session, settings, tenant, sent_tasks
):
    owner = tenant.row
    listening = make_callback(db_session, owner, "http://127.0.0.1:1/all")
    failures_only = make_callback(
        db_session, owner, "http://127.0.0.1:1/failures", event_types=["job.failed"]
    )
    make_callback(db_session, owner, "http://127.0.0.1:1/off", enabled=False)
    job = make_job(
        db_session, owner, "echo", {"hello": "world"}, callback_url="http://127.0.0.1:1/adhoc"
    )

    assert execute_job(db_session, settings, job.id) is True

    db_session.expire_all()
    done = db_session.get(Job, job.id)
    assert done.status == JobStatus.SUCCEEDED
    assert done.result == {"hello": "world"}
    assert done.finished_at is not None
    (message,) = messages_for(db_session, job.id)
    assert message.event_type == "job.succeeded"
    body = json.loads(message.body)
    assert body["type"] == "job.succeeded"
    assert body["data"]["id"] == str(job.id)
    assert body["data"]["status"] == "succeeded"
    urls = sorted(
        d.url for d in db_session.scalars(select(Delivery).where(Delivery.message_id == message.id))
    )
    assert urls == sorted([listening.url, "http://127.0.0.1:1/adhoc"])
    assert failures_only.url not in urls
    assert [t.name for t in sent_tasks] == ["boomerang.deliver"]  # one wake for both


def test_a_failing_job_ends_failed_with_a_readable_error_and_raises_job_failed(
    db_session, settings, tenant
):
    owner = tenant.row
    make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    job = make_job(db_session, owner, "fail", {"message": "disk on fire"})

    assert execute_job(db_session, settings, job.id) is False

    db_session.expire_all()
    failed = db_session.get(Job, job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error == "RuntimeError: disk on fire"
    (message,) = messages_for(db_session, job.id)
    assert message.event_type == "job.failed"
    assert json.loads(message.body)["data"]["error"] == "RuntimeError: disk on fire"


def test_a_digest_job_hashes_and_summarises_text(db_session, settings, tenant):
    job = make_job(db_session, tenant.row, "digest", {"text": "the cat and the hat"})
    assert execute_job(db_session, settings, job.id) is True
    db_session.expire_all()
    result = db_session.get(Job, job.id).result
    assert result["words"] == 5
    assert result["sha256"] == hashlib.sha256(b"the cat and the hat").hexdigest()
    assert result["top_words"][0] == ["the", 2]


def test_a_sleep_job_reports_progress_and_raises_progress_events_to_subscribers(
    db_session, settings, tenant
):
    owner = tenant.row
    make_callback(db_session, owner, "http://127.0.0.1:1/progress", event_types=["job.progress"])
    job = make_job(db_session, owner, "sleep", {"seconds": 0.3})

    assert execute_job(db_session, settings, job.id) is True

    db_session.expire_all()
    assert db_session.get(Job, job.id).progress["percent"] == 100
    kinds = [m.event_type for m in messages_for(db_session, job.id)]
    assert kinds.count("job.progress") == 1
    assert "job.succeeded" in kinds


def test_a_job_held_by_a_live_lease_is_not_run_twice(db_session, settings, tenant):
    job = make_job(
        db_session,
        tenant.row,
        "echo",
        status=JobStatus.RUNNING,
        attempts=1,
        locked_until=datetime.now(UTC) + timedelta(minutes=5),
    )
    assert execute_job(db_session, settings, job.id) is None
    db_session.expire_all()
    assert db_session.get(Job, job.id).attempts == 1


def test_a_job_whose_worker_died_is_run_again_once_the_lease_expires(db_session, settings, tenant):
    job = make_job(
        db_session,
        tenant.row,
        "echo",
        {"n": 1},
        status=JobStatus.RUNNING,
        attempts=1,
        locked_until=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert requeue_stranded_jobs(db_session, datetime.now(UTC), settings) == 1
    assert execute_job(db_session, settings, job.id) is True
    db_session.expire_all()
    rerun = db_session.get(Job, job.id)
    assert rerun.status == JobStatus.SUCCEEDED
    assert rerun.attempts == 2


def test_a_job_out_of_attempts_fails_and_still_sends_job_failed(db_session, settings, tenant):
    owner = tenant.row
    make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    job = make_job(
        db_session,
        owner,
        "echo",
        status=JobStatus.RUNNING,
        attempts=3,
        max_attempts=3,
        locked_until=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert requeue_stranded_jobs(db_session, datetime.now(UTC), settings) == 1
    assert execute_job(db_session, settings, job.id) is None
    db_session.commit()
    db_session.expire_all()
    dead = db_session.get(Job, job.id)
    assert dead.status == JobStatus.FAILED
    assert "stopped 3 times" in dead.error
    assert [m.event_type for m in messages_for(db_session, job.id)] == ["job.failed"]


def test_an_unknown_job_type_on_the_worker_fails_the_job_readably(db_session, settings, tenant):
    job = make_job(db_session, tenant.row, "no-such-type")
    assert execute_job(db_session, settings, job.id) is False
    db_session.expire_all()
    assert "no job type 'no-such-type'" in db_session.get(Job, job.id).error


def test_a_finished_job_is_not_run_again(db_session, settings, tenant):
    job = make_job(db_session, tenant.row, "echo", status=JobStatus.SUCCEEDED, attempts=1)
    assert execute_job(db_session, settings, job.id) is None


def test_a_result_postgres_cannot_store_fails_the_job_readably(db_session, settings, tenant):
    load_job_modules(["tests.custom_jobs"])
    nan = make_job(db_session, tenant.row, "unstorable", {"kind": "nan"})
    nul = make_job(db_session, tenant.row, "unstorable", {"kind": "nul"})
    assert execute_job(db_session, settings, nan.id) is False
    assert execute_job(db_session, settings, nul.id) is False
    db_session.expire_all()
    assert "Out of range float values" in db_session.get(Job, nan.id).error
    assert "NUL" in db_session.get(Job, nul.id).error
