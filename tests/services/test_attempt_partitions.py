"""The attempt log's daily partitions: made ahead, dropped whole once past retention."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import text

from app.models import DeliveryAttempt
from app.services import attempt_partitions as partitions
from tests.factories import make_callback, make_delivery, make_job

NOW = datetime.now(UTC)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@pytest.fixture
def delivery(db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    return make_delivery(db_session, callback, NOW)


def log_attempt(db_session, delivery, at: datetime) -> DeliveryAttempt:
    attempt = DeliveryAttempt(
        delivery_id=delivery.id, attempted_at=at, request_headers={}, duration_ms=1, succeeded=True
    )
    db_session.add(attempt)
    db_session.flush()
    return attempt


def home_of(db_session, attempt: DeliveryAttempt) -> str | None:
    """The partition holding ``attempt``, or None once it is gone."""
    return db_session.scalar(
        text("SELECT tableoid::regclass::text FROM delivery_attempt WHERE id = :id"),
        {"id": attempt.id},
    )


def test_today_and_the_days_ahead_have_partitions_from_the_migration(db_session):
    assert partitions.days_to_create(db_session, NOW) == []
    days = partitions.day_partitions(db_session)
    today = NOW.date()
    for ahead in range(partitions.DAYS_AHEAD + 1):
        assert today + timedelta(days=ahead) in days


def test_it_creates_the_missing_days_ahead_with_the_parents_indexes(db_session):
    later = NOW + timedelta(days=30)
    missing = partitions.days_to_create(db_session, later)
    assert missing == [later.date() + timedelta(days=n) for n in range(partitions.DAYS_AHEAD + 1)]

    for day in missing:
        assert partitions.create_partition(db_session, day) == 0

    assert partitions.days_to_create(db_session, later) == []
    indexes = db_session.scalars(
        text("SELECT indexdef FROM pg_indexes WHERE tablename = :name"),
        {"name": partitions.partition_name(missing[0])},
    ).all()
    assert len(indexes) == 3  # the key, by delivery, by time
    assert any("(delivery_id)" in index for index in indexes)


def test_a_new_partition_takes_the_rows_the_default_partition_held_for_its_day(
    db_session, delivery
):
    day = NOW.date() + timedelta(days=60)
    strays = [
        log_attempt(db_session, delivery, midnight(day) + timedelta(hours=h)) for h in (0, 23)
    ]
    neighbour = log_attempt(db_session, delivery, midnight(day + timedelta(days=1)))
    assert home_of(db_session, strays[0]) == partitions.DEFAULT_PARTITION

    assert partitions.create_partition(db_session, day) == 2

    assert [home_of(db_session, a) for a in strays] == [partitions.partition_name(day)] * 2
    assert home_of(db_session, neighbour) == partitions.DEFAULT_PARTITION


def test_it_drops_a_day_past_retention_and_keeps_a_young_one(db_session, delivery):
    cutoff = partitions.retention_cutoff(NOW, 30)
    old_day = cutoff.date() - timedelta(days=3)
    young_day = cutoff.date() + timedelta(days=2)
    for day in (old_day, young_day):
        partitions.create_partition(db_session, day)
    old = log_attempt(db_session, delivery, midnight(old_day) + timedelta(hours=12))
    young = log_attempt(db_session, delivery, midnight(young_day) + timedelta(hours=12))

    expired = partitions.expired_partitions(db_session, cutoff)
    assert expired == [partitions.partition_name(old_day)]
    for name in expired:
        partitions.drop_partition(db_session, name)

    assert home_of(db_session, old) is None
    assert home_of(db_session, young) == partitions.partition_name(young_day)


def test_the_day_straddling_the_cutoff_is_kept_whole(db_session, delivery):
    cutoff = midnight(NOW.date() - timedelta(days=30)) + timedelta(hours=6)
    straddling = cutoff.date()
    partitions.create_partition(db_session, straddling)
    partitions.create_partition(db_session, straddling - timedelta(days=1))
    older_than_cutoff = log_attempt(db_session, delivery, cutoff - timedelta(hours=5))

    assert partitions.expired_partitions(db_session, cutoff) == [
        partitions.partition_name(straddling - timedelta(days=1))
    ]
    # Kept: its day is not wholly past the cutoff, and it is under a day older than it.
    assert home_of(db_session, older_than_cutoff) == partitions.partition_name(straddling)
    # A day later its whole day is past, and it goes.
    assert partitions.partition_name(straddling) in partitions.expired_partitions(
        db_session, cutoff + timedelta(days=1)
    )


def test_a_day_ending_exactly_at_the_cutoff_is_dropped(db_session):
    cutoff = midnight(NOW.date() - timedelta(days=30))
    partitions.create_partition(db_session, cutoff.date() - timedelta(days=1))
    partitions.create_partition(db_session, cutoff.date())
    assert partitions.expired_partitions(db_session, cutoff) == [
        partitions.partition_name(cutoff.date() - timedelta(days=1))
    ]


def test_old_rows_in_the_default_partition_are_deleted_in_batches(db_session, delivery):
    cutoff = partitions.retention_cutoff(NOW, 30)
    old = [
        log_attempt(db_session, delivery, cutoff - timedelta(days=2, minutes=m)) for m in range(3)
    ]
    young = log_attempt(db_session, delivery, cutoff + timedelta(minutes=1))
    assert {home_of(db_session, a) for a in [*old, young]} == {partitions.DEFAULT_PARTITION}

    assert partitions.prune_default_batch(db_session, cutoff, 2) == 2
    assert partitions.prune_default_batch(db_session, cutoff, 2) == 1
    assert partitions.prune_default_batch(db_session, cutoff, 2) == 0
    assert home_of(db_session, young) == partitions.DEFAULT_PARTITION


def test_a_change_another_prune_made_meanwhile_is_not_made_twice(db_session):
    day = NOW.date() + timedelta(days=90)
    partitions.create_partition(db_session, day)
    assert partitions.create_partition(db_session, day) == 0
    name = partitions.partition_name(day)
    partitions.drop_partition(db_session, name)
    partitions.drop_partition(db_session, name)
    assert day not in partitions.day_partitions(db_session)


def test_only_the_days_own_partitions_can_be_dropped(db_session):
    with pytest.raises(ValueError):
        partitions.drop_partition(db_session, partitions.DEFAULT_PARTITION)
    with pytest.raises(ValueError):
        partitions.drop_partition(db_session, "delivery")


def plan(db_session, sql: str, **params) -> str:
    # Empty partitions make a sequential scan the cheapest plan; forbidding it shows whether
    # every partition has an index the lookup can use.
    db_session.execute(text("SET LOCAL enable_seqscan = off"))
    rows = db_session.execute(text(f"EXPLAIN {sql}"), params).scalars()
    return "\n".join(rows)


def test_looking_up_deliveries_attempts_uses_the_delivery_index_of_every_partition(
    db_session, delivery
):
    # As selectinload(Delivery.attempts) asks.
    explained = plan(
        db_session,
        "SELECT * FROM delivery_attempt WHERE delivery_id IN (:a, :b) ORDER BY attempted_at",
        a=delivery.id,
        b=uuid.uuid4(),
    )
    assert "Seq Scan" not in explained
    every = len(partitions.day_partitions(db_session)) + 1  # and the DEFAULT partition
    assert explained.count("_delivery_id_idx") == every


def test_looking_up_a_jobs_attempts_through_its_deliveries_uses_indexes(
    db_session, tenant, delivery
):
    job = make_job(db_session, tenant.row)
    explained = plan(
        db_session,
        "SELECT a.* FROM delivery_attempt a JOIN delivery d ON d.id = a.delivery_id "
        "JOIN message m ON m.id = d.message_id WHERE m.job_id = :job",
        job=job.id,
    )
    assert "Seq Scan" not in explained
    assert explained.count("_delivery_id_idx") == len(partitions.day_partitions(db_session)) + 1
