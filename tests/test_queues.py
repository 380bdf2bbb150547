"""Coalesced wakes through real Redis: one wake while a drain runs, a new one after it stops."""

from __future__ import annotations

import time

import redis
from kombu.exceptions import OperationalError

from app.queues import DELIVERY_WAKE, HELP_INTERVAL_MS, JOB_WAKE, Waker


def test_many_wakes_before_a_drain_starts_send_one_message(wakes):
    waker, sent = wakes
    assert [waker.wake() for _ in range(5)] == [True, False, False, False, False]
    assert sent == ["wake"]


def test_work_made_due_after_a_drain_looked_for_the_last_time_sends_a_new_wake(wakes):
    waker, sent = wakes
    waker.wake()
    waker.draining()
    assert waker.wake() is False  # the running drain will find it
    waker.about_to_stop()
    assert waker.wake() is True
    assert sent == ["wake", "wake"]


def test_a_drain_that_died_blocks_new_wakes_only_until_its_key_expires(wakes, settings):
    waker, _ = wakes
    waker.draining()
    ttl = redis.Redis.from_url(settings.redis_url).ttl(DELIVERY_WAKE.draining)
    assert 0 < ttl <= 10


def test_help_is_asked_for_at_most_once_per_interval(wakes):
    waker, sent = wakes
    assert [waker.ask_for_help() for _ in range(3)] == [True, False, False]
    assert sent == ["wake"]


def test_a_drain_asking_again_soon_after_costs_no_round_trip(wakes, settings, monkeypatch):
    waker, sent = wakes
    assert waker.ask_for_help() is True
    redis.Redis.from_url(settings.redis_url).delete(waker.keys.help)  # as if it had expired
    assert waker.ask_for_help() is False  # Redis was not asked: it would have said yes
    later = time.monotonic() + HELP_INTERVAL_MS / 1000
    monkeypatch.setattr("app.queues.time.monotonic", lambda: later)
    assert waker.ask_for_help() is True
    assert sent == ["wake", "wake"]


def test_without_redis_a_wake_is_left_to_the_sweep_and_redis_rests():
    sent: list[str] = []
    waker = Waker("redis://127.0.0.1:1/0", lambda: sent.append("wake"))
    assert waker.wake() is False
    assert sent == []
    assert waker.cooldown.resting


def test_a_resting_waker_does_not_ask_redis(wakes):
    waker, sent = wakes
    waker.cooldown.failed("test")
    assert waker.wake() is False
    assert waker.ask_for_help() is False
    assert sent == []


def test_a_broker_that_fails_after_redis_answered_does_not_stop_the_drain_asking_for_help(
    settings,
):
    def send() -> None:
        raise OperationalError("Error 111 connecting to the old primary")

    waker = Waker(settings.redis_url, send, JOB_WAKE)
    redis.Redis.from_url(settings.redis_url).delete(JOB_WAKE.help)
    assert waker.ask_for_help() is False
    assert waker.cooldown.resting
