"""At a glance: per-callback health over 24 hours (app/services/stats.py) and its page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.models import DeliveryStatus, JobStatus
from app.services import stats
from tests.factories import make_callback, make_delivery, make_job
from tests.portal.conftest import add_attempt

NOW = datetime(2026, 11, 29, 15, 30, tzinfo=UTC)


@pytest.fixture
def busy(db_session, tenant, other_tenant):
    """Two callbacks of the tenant with attempts at known hours, and another tenant's."""
    hook = make_callback(db_session, tenant.row, "http://127.0.0.1:9/busy")
    quiet = make_callback(db_session, tenant.row, "http://127.0.0.1:9/quiet")
    delivery = make_delivery(db_session, hook, now=NOW)
    # 15:00-16:00: three ok (10, 20, 30 ms), one failed (400 ms).
    for ms in (10, 20, 30):
        add_attempt(db_session, delivery, duration_ms=ms, at=NOW - timedelta(minutes=5))
    add_attempt(db_session, delivery, status=500, succeeded=False, duration_ms=400, at=NOW)
    # 12:00-13:00: one ok at 50 ms.
    add_attempt(db_session, delivery, duration_ms=50, at=NOW - timedelta(hours=3))
    # Older than the window: not counted.
    add_attempt(db_session, delivery, succeeded=False, status=500, at=NOW - timedelta(hours=25))
    theirs = make_callback(db_session, other_tenant.row, "http://127.0.0.1:9/theirs")
    add_attempt(db_session, make_delivery(db_session, theirs, now=NOW), at=NOW)
    return hook, quiet


def test_health_counts_attempts_success_and_latency_per_callback(db_session, tenant, busy):
    hook, quiet = busy

    health = stats.callback_health(db_session, tenant.row, NOW)

    assert [item.callback.id for item in health] == [hook.id, quiet.id]
    busy_health, quiet_health = health
    assert (busy_health.attempts, busy_health.succeeded) == (5, 4)
    assert busy_health.success_rate == pytest.approx(0.8)
    assert busy_health.p50_ms == pytest.approx(30)
    assert (quiet_health.attempts, quiet_health.success_rate, quiet_health.p50_ms) == (
        0,
        None,
        None,
    )


def test_health_has_one_bucket_per_utc_hour_the_current_one_last(db_session, tenant, busy):
    (busy_health, _) = stats.callback_health(db_session, tenant.row, NOW)

    buckets = busy_health.buckets
    assert len(buckets) == 24
    assert buckets[-1].starts_at == datetime(2026, 11, 29, 15, tzinfo=UTC)
    assert buckets[0].starts_at == datetime(2026, 11, 28, 16, tzinfo=UTC)
    assert (buckets[-1].attempts, buckets[-1].succeeded, buckets[-1].failed) == (4, 3, 1)
    assert buckets[-1].p50_ms == pytest.approx(25)
    assert (buckets[-4].attempts, buckets[-4].p50_ms) == (1, 50)
    assert sum(bucket.attempts for bucket in buckets) == 5


def test_status_counts_cover_every_status_for_the_tenant_only(db_session, tenant, other_tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    make_job(db_session, tenant.row, status=JobStatus.SUCCEEDED, created_at=NOW)
    make_job(db_session, tenant.row, status=JobStatus.FAILED, created_at=NOW)
    make_job(db_session, tenant.row, status=JobStatus.FAILED, created_at=NOW - timedelta(days=2))
    make_job(db_session, other_tenant.row, status=JobStatus.FAILED, created_at=NOW)
    failed = make_delivery(db_session, callback, now=NOW)
    failed.status = DeliveryStatus.FAILED
    make_delivery(db_session, callback, now=NOW)
    db_session.flush()

    counts = stats.status_counts(db_session, tenant.row, NOW - timedelta(hours=24))

    assert counts.jobs == {"queued": 0, "running": 0, "succeeded": 1, "failed": 1}
    assert counts.deliveries == {"pending": 1, "succeeded": 0, "failed": 1, "cancelled": 0}


def test_the_dashboard_shows_each_callbacks_rate_and_charts(signed_in, db_session, tenant):
    hook = make_callback(db_session, tenant.row, "http://127.0.0.1:9/busy")
    delivery = make_delivery(db_session, hook)
    add_attempt(db_session, delivery, duration_ms=10)
    add_attempt(db_session, delivery, status=500, succeeded=False, duration_ms=30)

    page = signed_in.text("/portal/")

    assert "http://127.0.0.1:9/busy" in page
    assert '<dd data-figure="success-rate">50.0 %</dd>' in page
    assert page.count('<svg class="chart"') == 2
    assert 'class="chart-ok"' in page and 'class="chart-failed"' in page
    assert 'class="chart-dot"' in page
    assert "<script>" not in page  # charts need no script


def test_the_dashboard_invites_a_tenant_without_callbacks_to_register_one(signed_in):
    assert "No callbacks yet" in signed_in.text("/portal/")
