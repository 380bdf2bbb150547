"""The incident machine as a pure function: outcomes in, health and raised events out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app import events
from app.services.callback_health import Health, Thresholds, fold_outcomes

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
THRESHOLDS = Thresholds(failing_after=timedelta(minutes=5), disable_after=timedelta(hours=1))


def healthy() -> Health:
    return Health(callback_id=uuid.uuid4(), url="https://example.com/hook", enabled=True)


def test_failures_below_the_threshold_build_a_streak_and_raise_nothing():
    health, raised = fold_outcomes(healthy(), [False, False], START, THRESHOLDS)
    assert health.consecutive_failures == 2
    assert health.failing_since == START
    assert health.failing_reported_at is None
    assert raised == []


def test_a_success_ends_a_blip_without_an_event():
    health, _ = fold_outcomes(healthy(), [False], START, THRESHOLDS)
    health, raised = fold_outcomes(health, [True], START + MINUTE, THRESHOLDS)
    assert (health.consecutive_failures, health.failing_since) == (0, None)
    assert raised == []


def test_failing_past_the_threshold_is_announced_once():
    health, _ = fold_outcomes(healthy(), [False], START, THRESHOLDS)
    later = START + 5 * MINUTE
    health, raised = fold_outcomes(health, [False, False], later, THRESHOLDS)
    assert [event.event_type for event in raised] == [events.CALLBACK_FAILING]
    assert raised[0].detail["failing_since"] == START.isoformat()
    assert raised[0].detail["failed_attempts"] == 2
    assert health.failing_reported_at == later
    _, again = fold_outcomes(health, [False], later + MINUTE, THRESHOLDS)
    assert again == []


def test_the_first_success_after_an_announcement_closes_the_incident():
    health, _ = fold_outcomes(healthy(), [False], START, THRESHOLDS)
    health, _ = fold_outcomes(health, [False], START + 5 * MINUTE, THRESHOLDS)
    healed = START + 6 * MINUTE
    health, raised = fold_outcomes(health, [True, True], healed, THRESHOLDS)
    assert [event.event_type for event in raised] == [events.CALLBACK_RECOVERED]
    assert raised[0].detail["recovered_at"] == healed.isoformat()
    assert health.failing_reported_at is None


def test_failing_past_the_disable_threshold_disables_once_with_a_reason():
    health, _ = fold_outcomes(healthy(), [False], START, THRESHOLDS)
    much_later = START + 2 * THRESHOLDS.disable_after
    health, raised = fold_outcomes(health, [False, False], much_later, THRESHOLDS)
    assert [event.event_type for event in raised] == [
        events.CALLBACK_FAILING,
        events.CALLBACK_DISABLED,
    ]
    assert raised[1].detail.startswith("2 failed attempts in a row since")
    assert health.enabled is False
    _, again = fold_outcomes(health, [False], START + 3 * THRESHOLDS.disable_after, THRESHOLDS)
    assert again == []


def test_a_disabled_callback_is_never_announced_as_failing():
    disabled = Health(callback_id=uuid.uuid4(), url="https://example.com/hook", enabled=False)
    health, raised = fold_outcomes(disabled, [False], START, Thresholds(MINUTE * 0, MINUTE * 0))
    assert raised == []
    assert health.consecutive_failures == 1
