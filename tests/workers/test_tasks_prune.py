"""The prune task: days ahead made, days past retention dropped, stray old rows deleted."""

from __future__ import annotations

import time as clock
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import text

from app.models import DeliveryAttempt
from app.services import attempt_partitions as partitions
from tests.factories import make_callback, make_delivery
from workers.tasks import maintain_attempt_partitions, prune_old_rows

NOW = datetime.now(UTC)


@pytest.fixture
def log(db_session, tenant):
    """Log an attempt at a given time; returns its id."""
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    delivery = make_delivery(db_session, callback, NOW)

    def log_attempt(at: datetime):
        attempt = DeliveryAttempt(
            delivery_id=delivery.id,
            attempted_at=at,
            request_headers={},
            duration_ms=1,
            succeeded=True,
        )
        db_session.add(attempt)
        db_session.flush()
        return attempt.id

    return log_attempt


def exists(db_session, table: str) -> bool:
    return db_session.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": table})


def attempt_ids(db_session) -> set:
    return set(db_session.scalars(text("SELECT id FROM delivery_attempt")))


def test_the_prune_task_makes_days_ahead_drops_old_days_and_deletes_stray_old_rows(
    db_session, settings, log
):
    cutoff = partitions.retention_cutoff(NOW, settings.retention_days)
    old_day = cutoff.date() - timedelta(days=3)
    partitions.create_partition(db_session, old_day)
    last_ahead = partitions.partition_name(NOW.date() + timedelta(days=partitions.DAYS_AHEAD))
    db_session.execute(text(f"DROP TABLE {last_ahead}"))
    in_old_day = log(datetime.combine(old_day, time(12), UTC))
    stray = log(cutoff - timedelta(days=10))  # no partition for its day: the DEFAULT one
    young = log(NOW)
    db_session.commit()

    totals = prune_old_rows(db_session, settings)

    assert totals["partitions_created"] == 1
    assert totals["partitions_dropped"] == 1
    assert totals["partitions_skipped"] == 0
    assert totals["attempts"] == 1
    assert exists(db_session, last_ahead)
    assert not exists(db_session, partitions.partition_name(old_day))
    remaining = attempt_ids(db_session)
    assert young in remaining
    assert not {in_old_day, stray} & remaining


def test_a_partition_change_that_cannot_have_its_lock_at_once_waits_for_the_next_run(
    db_session, engine, settings, log
):
    old_day = partitions.retention_cutoff(NOW, settings.retention_days).date() - timedelta(days=3)
    partitions.create_partition(db_session, old_day)
    log(datetime.combine(old_day, time(12), UTC))
    db_session.commit()

    # A reader of the log holds it for as long as its transaction lasts: the drop must give way
    # rather than queue delivery's INSERTs behind it. (ONLY: this test's own transaction holds
    # the partitions it made until it ends.)
    with engine.connect() as reader:
        reader.execute(text("LOCK TABLE ONLY delivery_attempt IN ACCESS SHARE MODE"))
        started = clock.monotonic()
        totals = maintain_attempt_partitions(db_session, NOW, settings)
        waited = clock.monotonic() - started
        reader.rollback()

    assert totals == {"partitions_created": 0, "partitions_dropped": 0, "partitions_skipped": 1}
    assert waited < 3
    assert exists(db_session, partitions.partition_name(old_day))

    totals = maintain_attempt_partitions(db_session, NOW, settings)
    assert totals["partitions_dropped"] == 1
    assert not exists(db_session, partitions.partition_name(old_day))
