"""The beat sweep: due retries and lost messages are found again, from Postgres alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.models import DeliveryStatus, JobStatus
from app.services.attempts import has_due_deliveries
from app.services.jobs import due_job_ids
from tests.factories import make_callback, make_delivery, make_job


def publish_one(db_session, owner, url, now):
    return make_delivery(db_session, make_callback(db_session, owner, url), now)


def test_a_new_delivery_is_due_at_once(db_session, tenant):
    now = datetime.now(UTC)
    publish_one(db_session, tenant[0], "http://127.0.0.1:1/a", now)
    assert has_due_deliveries(db_session, now) is True


def test_a_retry_is_due_only_when_its_time_comes(db_session, tenant):
    now = datetime.now(UTC)
    delivery = publish_one(db_session, tenant[0], "http://127.0.0.1:1/a", now)
    delivery.attempt_count = 1
    delivery.next_attempt_at = now + timedelta(seconds=5)
    db_session.flush()
    assert has_due_deliveries(db_session, now + timedelta(seconds=4)) is False
    assert has_due_deliveries(db_session, now + timedelta(seconds=6)) is True


def test_finished_and_leased_deliveries_are_not_due(db_session, tenant):
    now = datetime.now(UTC)
    done = publish_one(db_session, tenant[0], "http://127.0.0.1:1/a", now)
    done.status = DeliveryStatus.SUCCEEDED
    leased = publish_one(db_session, tenant[0], "http://127.0.0.1:1/b", now)
    leased.locked_until = now + timedelta(hours=1)
    db_session.flush()
    assert has_due_deliveries(db_session, now + timedelta(minutes=5)) is False


def test_a_delivery_whose_worker_died_is_due_again_once_its_lease_runs_out(db_session, tenant):
    now = datetime.now(UTC)
    delivery = publish_one(db_session, tenant[0], "http://127.0.0.1:1/a", now)
    delivery.locked_until = now + timedelta(seconds=10)  # claimed, then the worker vanished
    db_session.flush()
    assert has_due_deliveries(db_session, now + timedelta(seconds=5)) is False
    assert has_due_deliveries(db_session, now + timedelta(seconds=11)) is True


def test_a_queued_job_whose_message_was_lost_is_enqueued_again(db_session, settings, tenant):
    now = datetime.now(UTC)
    job = make_job(db_session, tenant[0], enqueued_at=now)
    assert due_job_ids(db_session, now, settings) == []
    later = now + timedelta(seconds=settings.requeue_after_seconds + 1)
    assert due_job_ids(db_session, later, settings) == [job.id]


def test_a_running_job_past_its_lease_is_enqueued_again(db_session, settings, tenant):
    now = datetime.now(UTC)
    job = make_job(
        db_session,
        tenant[0],
        status=JobStatus.RUNNING,
        attempts=1,
        enqueued_at=now,
        locked_until=now + timedelta(seconds=30),
    )
    assert due_job_ids(db_session, now + timedelta(seconds=10), settings) == []
    assert due_job_ids(db_session, now + timedelta(seconds=31), settings) == [job.id]


def test_while_a_backlog_is_queued_a_long_wait_is_not_taken_for_a_lost_message(
    db_session, settings, tenant
):
    now = datetime.now(UTC)
    job = make_job(db_session, tenant[0], enqueued_at=now)
    later = now + timedelta(seconds=settings.requeue_after_seconds + 1)
    assert due_job_ids(db_session, later, settings, requeue_waiting=False) == []
    assert due_job_ids(db_session, later, settings, requeue_waiting=True) == [job.id]


def test_the_sweep_reads_the_broker_queue_length(settings):
    import redis

    from workers.celery_app import create_celery
    from workers.tasks import queue_is_empty

    app = create_celery(settings)
    client = redis.Redis.from_url(settings.redis_url)
    queue = "sweep-test-queue"
    try:
        client.delete(queue)
        assert queue_is_empty(app, queue) is True
        client.rpush(queue, "message")
        assert queue_is_empty(app, queue) is False
    finally:
        client.delete(queue)
        client.close()
        app.boomerang.engine.dispose()
