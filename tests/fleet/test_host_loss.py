"""Whole hosts lost: killed outright, cut off by a partition, or the one running the scheduler.
After each, every job reached the callback, none ended twice, and every duplicate at the receiver
carried the same webhook-id."""

from __future__ import annotations

import time

import pytest

from tests.fleet.conftest import LEASE_SECONDS, Fleet, Host, record_figures

pytestmark = pytest.mark.fleet

# Beyond a lease running out: the next sweep (0.5 s), a drain waking and claiming.
TAKEOVER_SLACK_SECONDS = 1.5


def held_by(fleet: Fleet, host: Host) -> dict[str, set[str]]:
    """The deliveries and jobs whose current lease ``host`` took and still holds."""
    deliveries = fleet.sql(
        "SELECT DISTINCT d.id FROM delivery d JOIN fleet_audit a "
        "ON a.kind = 'delivery.lease' AND a.item = d.id AND a.lease = d.lease_id "
        "WHERE d.status = 'pending' AND d.locked_until > now() AND a.host = :host",
        host=host.address,
    )
    jobs = fleet.sql(
        "SELECT DISTINCT j.id FROM job j JOIN fleet_audit a "
        "ON a.kind = 'job.claim' AND a.item = j.id AND a.lease = j.lease_id "
        "WHERE j.status = 'running' AND a.host = :host",
        host=host.address,
    )
    return {
        "deliveries": {str(row[0]) for row in deliveries},
        "jobs": {str(row[0]) for row in jobs},
    }


def busiest(fleet: Fleet) -> Host:
    """The host holding the most delivery leases right now."""
    return max(fleet.hosts, key=lambda host: len(held_by(fleet, host)["deliveries"]))


def wait_until_finished(fleet: Fleet, held: dict[str, set[str]], timeout: float = 60) -> float:
    """Block until every delivery in ``held`` succeeded and every job ended; the epoch time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_deliveries = fleet.sql(
            "SELECT count(*) FROM delivery WHERE id = ANY(CAST(:ids AS uuid[])) "
            "AND status <> 'succeeded'",
            ids=list(held["deliveries"]),
        )[0][0]
        open_jobs = fleet.sql(
            "SELECT count(*) FROM job WHERE id = ANY(CAST(:ids AS uuid[])) "
            "AND status IN ('queued', 'running')",
            ids=list(held["jobs"]),
        )[0][0]
        if not open_deliveries and not open_jobs:
            return time.time()
        time.sleep(0.1)
    raise AssertionError("the lost host's work was never finished")


def first_taken_over(fleet: Fleet, lost: Host, held: dict[str, set[str]], since: float) -> float:
    """When the last of ``held`` was leased again by another host (epoch)."""
    taken: dict[str, float] = {}
    for kind, items in (("delivery.lease", held["deliveries"]), ("job.claim", held["jobs"])):
        for host, item, _, at in fleet.audit(kind, since):
            if item in items and host != lost.address:
                taken.setdefault(item, at)
    missing = (held["deliveries"] | held["jobs"]) - set(taken)
    assert not missing, f"{len(missing)} items were never leased by another host"
    return max(taken.values())


def test_a_host_killed_mid_burst_has_its_leases_finished_by_the_others_within_one_lease(
    fleet: Fleet,
):
    fleet.register("/killed", max_concurrency=1000)
    fleet.receiver.behave("/killed", delay_seconds=0.5)
    fleet.add_hosts(3)
    job_ids = fleet.submit(4, "sleep", seconds=2) + fleet.submit(300)
    deadline = time.monotonic() + 60
    # Mid-burst: the callback's learned limit has grown to many attempts in flight.
    while fleet.receiver.stats("/killed")["count"] < 100 and time.monotonic() < deadline:
        time.sleep(0.05)

    victim = busiest(fleet)
    victim.kill()
    killed_at = time.time()
    # A dead host changes nothing: what it holds now is what it held when it died.
    held = held_by(fleet, victim)
    assert held["deliveries"], "the killed host held no delivery"

    finished_at = wait_until_finished(fleet, held)
    taken_over_at = first_taken_over(fleet, victim, held, killed_at)
    fleet.wait_until_received(job_ids)
    figures = fleet.tally(job_ids)
    recovery = finished_at - killed_at
    record_figures(
        "a host SIGKILLed mid-burst",
        figures,
        recovery,
        hosts=3,
        held_deliveries=len(held["deliveries"]),
        held_jobs=len(held["jobs"]),
        taken_over_seconds=round(taken_over_at - killed_at, 2),
    )
    assert figures.lost == 0
    assert figures.jobs_finished_twice == 0
    assert figures.unique == figures.submitted
    # Its leases ran out within one lease of its death, and the others took the work at once.
    assert taken_over_at - killed_at <= LEASE_SECONDS + TAKEOVER_SLACK_SECONDS
    # A 2 s sleep job it was running starts again from the beginning.
    assert recovery <= LEASE_SECONDS + TAKEOVER_SLACK_SECONDS + (2.5 if held["jobs"] else 1.0)
    fleet.assert_settled()
