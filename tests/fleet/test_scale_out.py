"""Hosts added: one that joins a burst takes work at once, and three hosts deliver I/O-bound work
about three times as fast as one."""

from __future__ import annotations

import time

import pytest

from tests.fleet.conftest import Fleet, record_figures, wait_for

pytestmark = pytest.mark.fleet

# Each host's delivery process keeps this many attempts in flight: with a receiver that takes
# 0.5 s, a host delivers at most twice this many a second, so hosts, not the callback, set the
# pace (the callback's own max_concurrency is set far above three hosts' worth).
JOIN_CONCURRENCY = "20"
# A bound on the join test's burst, however slowly the new host starts.
JOIN_MOST_DELIVERIES = 3000
SCALE_CONCURRENCY = "120"
SCALE_DELIVERIES = 6000
# Enough to grow the callback's learned limit (8, one more per answer) past three hosts' worth,
# so that neither timed run pays for its growth.
WARM_UP_DELIVERIES = 400


def test_a_host_that_joins_mid_burst_takes_work_within_a_second(fleet: Fleet):
    fleet.register("/joined", max_concurrency=1000)
    fleet.receiver.behave("/joined", delay_seconds=0.5)
    fleet.add_hosts(2, BOOMERANG_DELIVERY_CONCURRENCY=JOIN_CONCURRENCY)
    # Two hosts deliver 80 a second here.
    job_ids = fleet.publish(600)
    started_at = time.time()
    fleet.wait_until_unique(80, timeout=30)

    joined = fleet.add_host(wait=False, BOOMERANG_DELIVERY_CONCURRENCY=JOIN_CONCURRENCY)
    # However long the host takes to start, the burst is still on when it is ready: top it up
    # (within bounds) while fewer than four seconds' worth wait.
    deadline = time.monotonic() + 90
    while " ready." not in joined.log("deliveries") and time.monotonic() < deadline:
        if fleet.pending() < 320 and len(job_ids) < JOIN_MOST_DELIVERIES:
            job_ids += fleet.publish(200)
        time.sleep(0.5)
    joined.wait_ready()
    ready_at = joined.ready_at()
    waiting_at_join = fleet.pending()

    def first_sent() -> float | None:
        sent = [r["at"] for r in fleet.receiver.records("/joined") if r["host"] == joined.address]
        return min(sent) if sent else None

    first_seen = wait_for(first_sent, 30, "the new host to send")
    last_at = fleet.wait_until_received(job_ids)
    figures = fleet.tally(job_ids)
    took_work_after = first_seen - ready_at
    record_figures(
        "a host joins mid-burst",
        figures,
        took_work_after,
        hosts=3,
        waiting_at_join=waiting_at_join,
        burst_seconds=round(last_at - started_at, 2),
        sent_by_new_host=sum(
            1 for r in fleet.receiver.records("/joined") if r["host"] == joined.address
        ),
    )
    assert waiting_at_join > 0, "the burst was over before the host joined"
    assert took_work_after <= 1.0
    assert figures.lost == 0
    assert figures.jobs_finished_twice == 0
    assert figures.unique == figures.submitted
    fleet.assert_settled()


def timed_run(fleet: Fleet, already: int) -> tuple[float, list[str]]:
    """Publish the scale-out burst; seconds from its commit to the last event's arrival, and
    its job ids."""
    job_ids = fleet.publish(SCALE_DELIVERIES)
    committed_at = time.time()
    fleet.wait_until_unique(already + SCALE_DELIVERIES, timeout=120)
    return fleet.wait_until_received(job_ids) - committed_at, job_ids


def test_three_hosts_deliver_slow_receivers_faster_than_one(fleet: Fleet):
    fleet.register("/scale", max_concurrency=10000)
    fleet.receiver.behave("/scale", delay_seconds=0.5)
    env = {
        "BOOMERANG_DELIVERY_CONCURRENCY": SCALE_CONCURRENCY,
        # The tenant's fleet-wide ceiling on attempts per second would cap three hosts.
        "BOOMERANG_TENANT_ATTEMPTS_PER_SECOND": "0",
    }
    # Three hosts up at once, but only the first with its delivery worker for now.
    hosts = [fleet.add_host(wait=False, **env)]
    others = [fleet.add_host(wait=False, kinds=("jobs", "beat"), **env) for _ in range(2)]
    for host in hosts + others:
        host.wait_ready()
    warm_up = fleet.publish(WARM_UP_DELIVERIES)
    fleet.wait_until_received(warm_up)

    one_host, first = timed_run(fleet, WARM_UP_DELIVERIES)
    # The other two hosts were up all along; their delivery workers join now.
    for host in others:
        host.start(("deliveries",))
    for host in others:
        host.wait_ready()
    three_hosts, second = timed_run(fleet, WARM_UP_DELIVERIES + SCALE_DELIVERIES)

    figures = fleet.tally(warm_up + first + second)
    speed_up = one_host / three_hosts
    stats = fleet.receiver.stats("/scale")
    record_figures(
        "scale-out, 6,000 deliveries to a 0.5 s receiver, 1 host then 3",
        figures,
        0.0,
        one_host_seconds=round(one_host, 2),
        three_hosts_seconds=round(three_hosts, 2),
        speed_up=round(speed_up, 2),
        peak_in_flight=stats["peak_in_flight"],
        concurrency_per_host=int(SCALE_CONCURRENCY),
    )
    print(f"scale-out speed-up, 1 host to 3: {speed_up:.2f}x ({one_host:.1f}s, {three_hosts:.1f}s)")
    assert figures.lost == 0
    assert figures.unique == figures.submitted
    assert speed_up > 1.5
    fleet.assert_settled()
