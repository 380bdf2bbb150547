"""Learned per-callback limits: additive increase on answers, halving on signs of trouble."""

from __future__ import annotations

import pytest

from workers.delivery.http import ErrorKind, HttpResult
from workers.delivery.lanes import LaneLimits, struggling


def answered(status: int) -> HttpResult:
    return HttpResult(status, {}, "", False, 5)


def failed(kind: ErrorKind) -> HttpResult:
    return HttpResult(None, None, None, False, 5, "failed", kind)


def test_a_new_lane_starts_small_and_grows_by_one_per_answer_up_to_the_ceiling():
    limits = LaneLimits(ceiling=6, initial=4)
    assert limits.limit("a") == 4
    assert [limits.heard("a", answered(200)) for _ in range(4)] == [5, 6, 6, 6]


@pytest.mark.parametrize(
    "result",
    [
        answered(429),
        answered(502),
        answered(503),
        answered(504),
        failed(ErrorKind.TIMEOUT),
        failed(ErrorKind.CONNECTION),
    ],
)
def test_signs_of_a_struggling_receiver_halve_its_limit_down_to_one(result):
    limits = LaneLimits(ceiling=128, initial=4)
    assert struggling(result)
    assert [limits.heard("a", result) for _ in range(3)] == [2, 1, 1]


def test_an_answer_that_is_an_error_of_the_request_is_no_sign_of_trouble():
    limits = LaneLimits(ceiling=128, initial=4)
    assert limits.heard("a", answered(404)) == 5
    assert limits.heard("a", answered(500)) == 6


def test_refusals_of_our_own_say_nothing_about_the_receiver():
    limits = LaneLimits(ceiling=128, initial=4)
    assert limits.heard("a", failed(ErrorKind.BLOCKED)) == 4
    assert limits.heard("a", failed(ErrorKind.TOO_LARGE)) == 4


def test_only_lanes_off_their_start_are_reported_and_lanes_are_forgotten_oldest_first(
    monkeypatch,
):
    monkeypatch.setattr("workers.delivery.lanes.REMEMBERED_LANES", 2)
    limits = LaneLimits(ceiling=128, initial=4)
    limits.heard("a", answered(200))
    limits.heard("b", failed(ErrorKind.TIMEOUT))
    limits.heard("c", answered(200))
    assert limits.known() == {"b": 2, "c": 5}
    assert limits.limit("a") == 4
