"""Retention prunes old rows in batches and keeps anything still in flight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.models import DeliveryAttempt, DeliveryStatus, Job, JobStatus
from app.services.retention import prune_batch
from tests.factories import make_callback, make_delivery, make_job


def old_job_with_delivery(db_session, owner, callback, finished_at, delivery_status):
    job = make_job(
        db_session,
        owner,
        status=JobStatus.SUCCEEDED,
        finished_at=finished_at,
        created_at=finished_at,
    )
    delivery = make_delivery(db_session, callback, finished_at, job_id=job.id)
    delivery.status = delivery_status
    db_session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            attempted_at=finished_at,
            request_headers={},
            duration_ms=1,
            succeeded=True,
        )
    )
    db_session.flush()
    return job


def test_it_prunes_old_jobs_and_attempts_and_keeps_recent_and_pending(db_session, settings, tenant):
    owner = tenant.row
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    now = datetime.now(UTC)
    ancient = now - timedelta(days=settings.retention_days + 1)
    old = old_job_with_delivery(db_session, owner, callback, ancient, DeliveryStatus.SUCCEEDED)
    stuck = old_job_with_delivery(db_session, owner, callback, ancient, DeliveryStatus.PENDING)
    recent = old_job_with_delivery(
        db_session, owner, callback, now - timedelta(days=1), DeliveryStatus.SUCCEEDED
    )

    counts = prune_batch(db_session, now, settings)

    assert counts["jobs"] == 1
    assert counts["attempts"] == 2  # the two ancient attempts; the recent one stays
    db_session.expire_all()
    assert db_session.get(Job, old.id) is None
    assert db_session.get(Job, stuck.id) is not None
    assert db_session.get(Job, recent.id) is not None


def test_it_deletes_at_most_one_batch_per_call(db_session, settings, tenant):
    owner = tenant.row
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    ancient = datetime.now(UTC) - timedelta(days=settings.retention_days + 1)
    for _ in range(3):
        old_job_with_delivery(db_session, owner, callback, ancient, DeliveryStatus.SUCCEEDED)
    small = settings.replace(prune_batch_size=2)
    assert prune_batch(db_session, datetime.now(UTC), small)["jobs"] == 2
    assert prune_batch(db_session, datetime.now(UTC), small)["jobs"] == 1


def test_it_frees_idempotency_keys_past_their_window(db_session, settings, tenant):
    job = make_job(
        db_session,
        tenant.row,
        idempotency_key="order-1",
        created_at=datetime.now(UTC) - timedelta(seconds=settings.idempotency_ttl_seconds + 5),
    )
    fresh = make_job(db_session, tenant.row, idempotency_key="order-2")
    assert prune_batch(db_session, datetime.now(UTC), settings)["idempotency_keys"] == 1
    db_session.expire_all()
    assert db_session.get(Job, job.id).idempotency_key is None
    assert db_session.get(Job, fresh.id).idempotency_key == "order-2"
