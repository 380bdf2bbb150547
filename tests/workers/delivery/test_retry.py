import random
from datetime import UTC, datetime, timedelta

import pytest

from workers.delivery.retry import MAX_RETRY_AFTER_SECONDS, next_attempt_at, parse_retry_after

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE = (5, 300, 1800)


def test_it_waits_the_scheduled_delay_for_each_failure():
    assert next_attempt_at(1, SCHEDULE, NOW) == NOW + timedelta(seconds=5)
    assert next_attempt_at(2, SCHEDULE, NOW) == NOW + timedelta(seconds=300)
    assert next_attempt_at(3, SCHEDULE, NOW) == NOW + timedelta(seconds=1800)


def test_it_gives_up_after_the_last_scheduled_retry():
    assert next_attempt_at(4, SCHEDULE, NOW) is None


def test_it_keeps_jitter_within_the_fraction_and_varies_it():
    rng = random.Random(7)
    delays = {
        (next_attempt_at(2, SCHEDULE, NOW, jitter=0.1, rng=rng) - NOW).total_seconds()
        for _ in range(50)
    }
    assert all(270 <= delay <= 330 for delay in delays)
    assert len(delays) > 10


def test_it_prefers_retry_after_over_the_schedule():
    assert next_attempt_at(1, SCHEDULE, NOW, retry_after_seconds=42) == NOW + timedelta(seconds=42)


def test_it_caps_an_enormous_retry_after():
    when = next_attempt_at(1, SCHEDULE, NOW, retry_after_seconds=10**9)
    assert when == NOW + timedelta(seconds=MAX_RETRY_AFTER_SECONDS)


def test_it_reads_retry_after_as_seconds_or_an_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", NOW) == 60
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize("value", ["999999999999", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_receiver_cannot_ask_for_a_pause_longer_than_the_cap(value):
    assert parse_retry_after(value, NOW) == MAX_RETRY_AFTER_SECONDS
