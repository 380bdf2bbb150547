"""Learned per-callback limits: additive increase on answers, halving on signs of trouble."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from workers.delivery.http import ErrorKind, HttpResult
from workers.delivery.lanes import LaneLimits, split_unproven, struggling
from workers.delivery.store import ClaimedDelivery


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


def test_a_lane_answers_once_its_last_answer_was_good_and_stops_on_a_sign_of_trouble():
    limits = LaneLimits(ceiling=128, initial=4)
    assert not limits.answering("a")
    limits.heard("a", answered(500))
    assert limits.answering("a")
    limits.heard("a", failed(ErrorKind.TIMEOUT))
    assert not limits.answering("a")
    limits.heard("a", failed(ErrorKind.BLOCKED))
    assert not limits.answering("a")


def claimed_in(*lanes: str) -> list[ClaimedDelivery]:
    return [cast(ClaimedDelivery, SimpleNamespace(lane=lane)) for lane in lanes]


def test_lanes_not_known_to_answer_share_half_the_slots_and_a_new_one_may_probe_past_it():
    limits = LaneLimits(ceiling=128, initial=4)
    limits.heard("good", answered(200))
    # Eight slots: four for the unproven, six with probes. "dead" already holds three.
    in_flight = {"dead": 3, "good": 1}
    claim = claimed_in("dead", "dead", "good", "good", "new1", "new1", "new2", "new3")
    go, wait = split_unproven(claim, in_flight, limits, slots=8)
    assert [item.lane for item in go] == ["dead", "good", "good", "new1", "new2"]
    assert [item.lane for item in wait] == ["dead", "new1", "new3"]
