"""Each callback's limits held across processes in real Redis: the concurrency cap counts every
process's attempts, a dead process's slots come free with its leases, the learned limit halves
once per window and grows back, Retry-After pauses the lane for everyone, and a rate shapes
rather than drops. Two ``SharedLanes`` stand for two delivery processes (or hosts)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.factories import claimed_delivery
from tests.support.processes import free_port
from workers.delivery import shared_lanes
from workers.delivery.http import ErrorKind, HttpResult
from workers.delivery.lanes import LaneLimits
from workers.delivery.shared_lanes import Answer, SharedLanes, burst_of, lane_keys, slot_of
from workers.delivery.store import ClaimedDelivery


def answered(item: ClaimedDelivery, status: int = 200, pause: float | None = None) -> Answer:
    return Answer(item, HttpResult(status, {}, "", False, 5), pause)


def timed_out(item: ClaimedDelivery) -> Answer:
    return Answer(item, HttpResult(None, None, None, False, 5, "timed out", ErrorKind.TIMEOUT))


def process(settings) -> SharedLanes:
    return SharedLanes(settings, LaneLimits(settings.callback_concurrency))


def test_the_cap_counts_every_processs_attempts_and_frees_a_slot_per_answer(settings):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    mine = [claimed_delivery(callback, max_concurrency=3) for _ in range(5)]
    admission = first.admit(mine)
    assert admission.admitted == mine[:3]
    assert admission.wait_for_slot == mine[3:]
    theirs = [claimed_delivery(callback, max_concurrency=3) for _ in range(2)]
    assert second.admit(theirs).admitted == []
    first.heard([answered(item) for item in mine[:2]])
    assert second.admit(theirs).admitted == theirs


def test_each_process_sizes_its_next_claim_by_its_share_of_what_the_fleet_allows(settings):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    lane = str(callback)
    mine = [claimed_delivery(callback) for _ in range(5)]
    assert first.admit(mine, {}).admitted == mine
    # The fleet's limit is 8 and the first process holds 5: the second may claim 3 more.
    theirs = [claimed_delivery(callback) for _ in range(5)]
    assert len(second.admit(theirs, {}).admitted) == 3
    assert second.local.limit(lane) == 3
    # Five answers grow the fleet's new limit by three each, to 23. The second still holds 3, so
    # the first sizes its next claim at its even part, 12, not at the 20 the second leaves free:
    # the second is sending too, and its next claim would find them taken.
    first.heard([answered(item) for item in mine], {})
    assert first.local.limit(lane) == 12


def test_a_callbacks_own_cap_above_the_default_ceiling_is_kept_locally_too(settings):
    lanes = process(settings.replace(callback_concurrency=4))
    callback = uuid.uuid4()
    items = [claimed_delivery(callback, max_concurrency=50) for _ in range(8)]
    admitted = lanes.admit(items, {}).admitted
    assert len(admitted) == 4  # a new lane starts at the ceiling when that is below 8
    lanes.heard([answered(item) for item in admitted], {})
    assert lanes.local.limit(str(callback)) == 4 + 4 * 3


def test_a_full_lane_is_held_back_from_the_next_claim_for_a_moment(settings, monkeypatch):
    # A moment long enough to look at on a busy host; the hold is the same at 0.1 s.
    monkeypatch.setattr(shared_lanes, "FULL_RECHECK_SECONDS", 1.0)
    lanes = process(settings)
    callback = uuid.uuid4()
    lanes.admit([claimed_delivery(callback, max_concurrency=1) for _ in range(2)])
    assert str(callback) in lanes.held_lanes()
    time.sleep(1.1)
    assert str(callback) not in lanes.held_lanes()


def test_a_process_refused_while_its_share_is_kept_free_asks_again_sooner(settings, monkeypatch):
    # Moments long enough to look at on a busy host; the rule is the same at 20 and 100 ms.
    monkeypatch.setattr(shared_lanes, "OWED_RECHECK_SECONDS", 0.5)
    monkeypatch.setattr(shared_lanes, "FULL_RECHECK_SECONDS", 30.0)
    first, second = process(settings), process(settings)
    owed, full = uuid.uuid4(), uuid.uuid4()
    # The first takes the whole of both limits; each has room for two.
    for callback in (owed, full):
        taken = [claimed_delivery(callback, max_concurrency=2) for _ in range(2)]
        assert first.admit(taken, {}).admitted == taken
    # The second holds nothing of ``owed`` and is refused: its even part (one) is owed to it.
    assert second.admit([claimed_delivery(owed, max_concurrency=2)], {}).admitted == []
    # It holds one of ``full`` already (its share): refused, it has nothing owed.
    assert second.admit([claimed_delivery(full, max_concurrency=2)], {str(full): 1}).admitted == []
    assert set(second.held_lanes()) == {str(owed), str(full)}
    time.sleep(0.6)
    assert second.held_lanes() == [str(full)]


def test_the_slots_of_a_process_that_died_come_free_when_its_leases_end(settings):
    short = settings.replace(delivery_lease_seconds=1, total_timeout_seconds=0.5)
    dead, alive = process(short), process(short)
    callback = uuid.uuid4()
    assert (
        len(dead.admit([claimed_delivery(callback, max_concurrency=2) for _ in range(2)]).admitted)
        == 2
    )
    waiting = [claimed_delivery(callback, max_concurrency=2)]
    assert alive.admit(waiting).admitted == []
    time.sleep(1.2)
    assert alive.admit(waiting).admitted == waiting


def test_struggling_answers_halve_the_fleets_limit_once_a_window_and_answers_grow_it(settings):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    items = [claimed_delivery(callback) for _ in range(8)]
    first.admit(items)
    first.heard([answered(item) for item in items])  # 8, and 3 for each answer
    assert first.local.limit(str(callback)) == 32
    burst = [claimed_delivery(callback) for _ in range(6)]
    second.admit(burst)
    second.heard([timed_out(item) for item in burst[:3]])
    assert second.local.limit(str(callback)) == 16
    # The rest of the same failing burst is the same signal: no second halving.
    first.heard([timed_out(item) for item in burst[3:]])
    assert first.local.limit(str(callback)) == 16
    time.sleep(1.05)
    again = [claimed_delivery(callback)]
    first.admit(again)
    first.heard([answered(again[0], 503)])
    assert first.local.limit(str(callback)) == 8
    # Another process now admits only the fleet's limit.
    assert len(second.admit([claimed_delivery(callback) for _ in range(10)]).admitted) == 8
    # Once halved, a lane grows back by one per answer.
    healed = [claimed_delivery(callback) for _ in range(4)]
    first.admit(healed)
    first.heard([answered(item) for item in healed])
    assert first.local.limit(str(callback)) == 8 + 4


def test_a_retry_after_pauses_the_lane_for_every_process(settings):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    item = claimed_delivery(callback)
    first.admit([item])
    first.heard([answered(item, 429, pause=3.0)])
    later = [claimed_delivery(callback) for _ in range(2)]
    admission = second.admit(later)
    assert admission.admitted == []
    [(seconds, waiting)] = admission.wait_seconds.items()
    assert waiting == later
    assert 2.0 < seconds <= 3.0  # what is left of the pause, with room for a busy host
    time.sleep(seconds + 0.05)
    assert second.admit(later).admitted == later


def test_a_rate_limited_callback_at_its_concurrency_waits_for_a_slot_not_for_time(settings):
    callback = uuid.uuid4()
    items = [claimed_delivery(callback, max_concurrency=3, rate=1000) for _ in range(5)]
    admission = process(settings).admit(items)
    # The rate had room for all five (a burst of 100): only the cap of 3 held two back, so they
    # keep their place in the queue rather than being put back due a moment later.
    assert admission.admitted == items[:3]
    assert admission.wait_for_slot == items[3:]
    assert admission.wait_seconds == {}


def test_slots_answered_during_a_redis_blip_are_freed_once_it_is_asked_again(settings, monkeypatch):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    mine = [claimed_delivery(callback, max_concurrency=2) for _ in range(2)]
    assert first.admit(mine).admitted == mine
    monkeypatch.setattr(shared_lanes, "SKIP_AFTER_FAILURE_SECONDS", 0.2)
    answers_redis = shared_lanes.evaluate_each

    def blip(*args, **kwargs):
        monkeypatch.setattr(shared_lanes, "evaluate_each", answers_redis)
        raise redis.TimeoutError("one call timed out")

    monkeypatch.setattr(shared_lanes, "evaluate_each", blip)
    first.heard([answered(item) for item in mine])
    theirs = [claimed_delivery(callback, max_concurrency=2)]
    assert second.admit(theirs).admitted == []  # the fleet still counts both slots
    time.sleep(0.25)  # the first process asks Redis again
    first.admit([claimed_delivery(uuid.uuid4())])
    assert second.admit(theirs).admitted == theirs


def test_more_slots_kept_in_one_lane_than_one_script_call_takes_are_all_freed(
    settings, monkeypatch
):
    lanes = process(settings)
    callback = uuid.uuid4()
    items = [claimed_delivery(callback) for _ in range(9_000)]
    _, busy, _ = lane_keys(str(callback))
    fleet = redis.Redis.from_url(settings.redis_url)
    fleet.zadd(busy, {slot_of(item): time.time() + 60 for item in items})  # all in flight
    monkeypatch.setattr(shared_lanes, "SKIP_AFTER_FAILURE_SECONDS", 0.2)
    lanes._fail()  # as after a failed call: Redis is left alone for a moment
    lanes.heard([answered(item) for item in items])
    time.sleep(0.25)
    lanes.admit([claimed_delivery(uuid.uuid4())])
    # In one script call, Lua's unpack() would refuse 9,000 members.
    assert fleet.zcard(busy) == 0
    assert lanes.shared


def test_kept_slots_redis_refuses_to_free_are_dropped_not_asked_for_again(settings, monkeypatch):
    lanes = process(settings)
    callback = uuid.uuid4()
    _, busy, _ = lane_keys(str(callback))
    redis.Redis.from_url(settings.redis_url).set(busy, "not a sorted set", ex=60)
    monkeypatch.setattr(shared_lanes, "SKIP_AFTER_FAILURE_SECONDS", 0.2)
    lanes._fail()
    lanes.heard([answered(claimed_delivery(callback))])
    time.sleep(0.25)
    # WRONGTYPE would come back on every try: asked again, it would keep this process off
    # Redis for good.
    lanes.admit([claimed_delivery(uuid.uuid4())])
    assert lanes.shared


def test_a_rate_shapes_deliveries_across_processes_and_drops_none(settings):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    rate = 20.0
    sent_at: list[float] = []
    pending = [claimed_delivery(callback, rate=rate) for _ in range(30)]
    deadline = time.monotonic() + 5
    turn = 0
    while pending and time.monotonic() < deadline:
        lanes = (first, second)[turn % 2]
        turn += 1
        admission = lanes.admit(pending)
        sent_at += [time.monotonic()] * len(admission.admitted)
        lanes.heard([answered(item) for item in admission.admitted])
        pending = [item for item in pending if item not in admission.admitted]
        for seconds in admission.wait_seconds:
            assert seconds <= 1 / rate + 0.01
        time.sleep(0.01)
    assert not pending
    assert len(sent_at) == 30
    # GCRA: in any window of one second, at most rate + burst.
    for start in sent_at:
        in_window = sum(1 for at in sent_at if start <= at < start + 1)
        assert in_window <= rate + burst_of(rate)
    assert sent_at[-1] - sent_at[0] >= (30 - burst_of(rate)) / rate - 0.1


def test_without_redis_each_process_falls_back_to_its_own_limits(settings):
    away = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    lanes = process(away)
    items = [claimed_delivery(uuid.uuid4(), max_concurrency=1) for _ in range(3)]
    admission = lanes.admit(items)
    assert admission.admitted == items  # the claim's own rooms bound it meanwhile
    assert not lanes.shared
    lanes.heard([answered(items[0])])  # learned locally, Redis not asked again for a while
    assert lanes.local.limit(items[0].lane) == 1


def test_without_redis_a_callbacks_own_max_concurrency_still_holds_in_each_process(settings):
    away = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    lanes = process(away)
    callback = uuid.uuid4()
    # A callback this process never heard from: the claim sized it at the initial limit, 8.
    items = [claimed_delivery(callback, max_concurrency=2) for _ in range(5)]
    admission = lanes.admit(items, {})
    assert admission.admitted == items[:2]
    assert admission.wait_for_slot == items[2:]
    assert lanes.local.limit(str(callback)) == 2  # the next claim leases no more than that
    more = [claimed_delivery(callback, max_concurrency=2)]
    assert lanes.admit(more, {str(callback): 2}).wait_for_slot == more


@pytest.mark.parametrize("rate", [0.5, 1, 20, 1000])
def test_a_rate_allows_a_tenth_of_a_second_back_to_back_and_never_less_than_one(rate):
    assert burst_of(rate) == max(1, -(-rate // 10))


def test_a_process_holding_the_whole_limit_gives_way_to_another_that_wants_its_share(settings):
    first, second = process(settings), process(settings)
    callback = uuid.uuid4()
    lane = str(callback)
    mine = [claimed_delivery(callback, max_concurrency=8) for _ in range(8)]
    assert first.admit(mine, {}).admitted == mine  # alone, the first may take the whole limit
    theirs = [claimed_delivery(callback, max_concurrency=8) for _ in range(6)]
    assert second.admit(theirs, {}).admitted == []  # full: the second now wants its share
    # Four answers free four slots; the first, holding four, is at its even part (4 of 8), so
    # it takes none of them, and the second gets them.
    first.heard([answered(item) for item in mine[:4]], {lane: 4})
    more = [claimed_delivery(callback, max_concurrency=8) for _ in range(4)]
    assert first.admit(more, {lane: 4}).admitted == []
    assert first.local.limit(lane) == 4
    assert len(second.admit(theirs, {}).admitted) == 4
    # The first's other four came back: holding none, it may take its even part again.
    first.heard([answered(item) for item in mine[4:]], {lane: 0})
    assert len(first.admit(more, {lane: 0}).admitted) == 4
