"""The clock: a process that follows Postgres reads Postgres' time, however wrong its own is."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from app import clock


@pytest.fixture(autouse=True)
def own_clock():
    yield
    clock.stop_following()
    clock.set_host_skew(0)


def close_to(a: datetime, b: datetime, seconds: float = 0.5) -> bool:
    return abs((a - b).total_seconds()) < seconds


def near(a: timedelta, b: timedelta, seconds: float = 0.5) -> bool:
    return abs((a - b).total_seconds()) < seconds


def test_a_process_that_follows_nothing_reads_its_own_clock():
    assert close_to(clock.utcnow(), datetime.now(UTC))
    assert clock.offset() == timedelta(0)


def test_the_skew_setting_moves_the_hosts_own_clock():
    clock.set_host_skew(300)
    assert close_to(clock.host_now(), datetime.now(UTC) + timedelta(seconds=300))
    assert close_to(clock.utcnow(), datetime.now(UTC) + timedelta(seconds=300))


def test_a_fast_host_that_follows_postgres_reads_postgres_time(engine):
    clock.follow_database(engine, host_skew_seconds=300)
    assert near(clock.offset(), timedelta(seconds=-300))
    read_postgres = clock.database_time(engine)
    # Bracketed, so a slow round trip is not counted against the offset; the 0.1 s is for the
    # offset's own error, half the quickest reading's round trip.
    before = clock.utcnow()
    theirs = read_postgres()
    after = clock.utcnow()
    assert before - timedelta(seconds=0.1) <= theirs <= after + timedelta(seconds=0.1)


def test_the_offset_comes_from_the_quickest_reading():
    readings = 0

    def read() -> datetime:
        nonlocal readings
        theirs = datetime.now(UTC) + timedelta(seconds=10)
        readings += 1
        if readings == 1:
            time.sleep(0.4)  # Postgres answered at once, and the answer waited (a busy machine)
        return theirs

    # From the first reading alone, the host's midpoint would be 0.2 s late: 9.8 s.
    assert near(clock.measure_offset(read), timedelta(seconds=10), seconds=0.05)
    assert readings == clock.READINGS


def test_the_offset_is_measured_again_in_the_background():
    readings = iter([datetime(2030, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC)])
    later = datetime(2040, 1, 1, tzinfo=UTC)

    def read() -> datetime:
        return next(readings, later)

    clock.follow(read, every_seconds=0.05)
    deadline = time.monotonic() + 5
    while clock.utcnow().year != 2040 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert clock.utcnow().year == 2040


def test_a_failed_reading_keeps_the_last_offset():
    answers: list[datetime | Exception] = [
        datetime(2030, 1, 1, tzinfo=UTC),
        ConnectionError("Postgres is away"),
    ]

    def read() -> datetime:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock.follow(read, every_seconds=60)
    kept = clock.offset()
    assert clock.refresh() is False
    assert clock.offset() == kept
    assert close_to(clock.utcnow(), datetime(2030, 1, 1, tzinfo=UTC))
