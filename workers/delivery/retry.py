"""The retry strategy: pure functions of the attempt number, the schedule and the clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

# A receiver may ask for a pause, but not for longer than the longest step of a default schedule.
MAX_RETRY_AFTER_SECONDS = 24 * 3600


def next_attempt_at(
    failed_attempts: int,
    schedule: tuple[int, ...],
    now: datetime,
    *,
    jitter: float = 0.0,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after ``failed_attempts`` failures in a row; None when retries are used up.

    ``retry_after_seconds`` (from a 429 or 503) replaces the scheduled delay when given.
    """
    if failed_attempts < 1 or failed_attempts > len(schedule):
        return None
    if retry_after_seconds is not None:
        return now + timedelta(seconds=min(max(retry_after_seconds, 0), MAX_RETRY_AFTER_SECONDS))
    delay = float(schedule[failed_attempts - 1])
    if jitter:
        delay *= 1 + (rng or random).uniform(-jitter, jitter)
    return now + timedelta(seconds=delay)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), at most
    ``MAX_RETRY_AFTER_SECONDS``; None if absent or odd."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is True too
        # Capped here, not only where a retry is scheduled: the pause it sets on the whole
        # callback is a date too, and a receiver's 400 digits make float() infinite.
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)
