"""A callback's limits are the fleet's, not each process's: three hosts together never hold more
of its requests than its max_concurrency, never send faster than its rate, and share one learned
limit that falls when the receiver answers 503 and grows back when it heals. The receiver in its
own namespace measures what it was sent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.receiver import Received, peak_in_flight
from tests.fleet.conftest import Fleet, record_figures

pytestmark = pytest.mark.fleet

# Arrivals in one second may exceed the rate by the burst (a tenth of a second's worth) and by
# this much jitter: an attempt admitted first may reach the receiver a little after a later one
# sent by another host.
RATE_TOLERANCE = 2


def as_received(records: list[dict[str, Any]]) -> list[Received]:
    return [Received(r["path"], {}, b"", r["at"], r["status"], r["answered_at"]) for r in records]


def test_a_callbacks_cap_and_rate_hold_across_three_hosts(fleet: Fleet):
    fleet.add_hosts(3)

    fleet.register("/capped", max_concurrency=6)
    fleet.receiver.behave("/capped", delay_seconds=0.3)
    capped = fleet.publish(150)
    fleet.wait_until_received(capped, timeout=90)
    capped_figures = fleet.tally(capped)
    capped_stats = fleet.receiver.stats("/capped")

    fleet.register("/metered", rate_limit_per_second=20)
    metered = fleet.publish(120)
    started = time.time()
    metered_seconds = fleet.wait_until_received(metered, timeout=90) - started
    metered_figures = fleet.tally(metered)
    metered_stats = fleet.receiver.stats("/metered")

    record_figures(
        "max_concurrency 6 across 3 hosts",
        capped_figures,
        0.0,
        peak_in_flight=capped_stats["peak_in_flight"],
        by_host=capped_stats["by_host"],
    )
    record_figures(
        "rate 20/s across 3 hosts",
        metered_figures,
        0.0,
        seconds=round(metered_seconds, 2),
        busiest_second=metered_stats["busiest_second"],
        by_host=metered_stats["by_host"],
    )
    assert capped_figures.lost == metered_figures.lost == 0
    # Each host could hold 256 of them; all three together held no more than six, and did hold
    # six: a cap, not a trickle.
    assert capped_stats["peak_in_flight"] == 6
    assert len(capped_stats["by_host"]) >= 2
    # 120 at 20 a second take about six seconds, however many hosts send them.
    assert metered_stats["busiest_second"] <= 20 + 2 + RATE_TOLERANCE
    assert metered_seconds >= 4.5
    assert len(metered_stats["by_host"]) >= 2


def test_a_receiver_answering_503_sees_the_fleets_concurrency_fall_then_recover(fleet: Fleet):
    fleet.add_hosts(3)
    fleet.register("/sick")
    failing_for = 8.0
    fleet.receiver.behave("/sick", delay_seconds=0.2, status=503, status_seconds=failing_for)
    healed_at = time.time() + failing_for
    job_ids = fleet.publish(400)
    fleet.wait_until_received(job_ids, timeout=120)

    figures = fleet.tally(job_ids)
    seen = as_received(fleet.receiver.records("/sick"))
    first = min(r.at for r in seen)
    at_first = peak_in_flight(seen, first, first + 0.5)
    while_failing = peak_in_flight(seen, healed_at - 3, healed_at)
    after_healing = peak_in_flight(seen, healed_at + 1, healed_at + 20)
    record_figures(
        "503 for 8 s across 3 hosts: the shared limit falls, then recovers",
        figures,
        0.0,
        peak_at_first=at_first,
        peak_while_failing=while_failing,
        peak_after_healing=after_healing,
    )
    assert figures.lost == 0
    # Three hosts start at the one shared limit of 8 (not 8 each), halve it on each second of
    # 503s whichever host hears them, down to one or two...
    assert 2 < at_first <= 8
    assert while_failing <= 2
    # ...and grow it back, one per answer, once the receiver heals.
    assert after_healing >= 8
