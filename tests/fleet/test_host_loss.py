"""Whole hosts lost: killed outright, cut off by a partition, or the one running the scheduler.
After each, every job reached the callback, none ended twice, and every duplicate at the receiver
carried the same webhook-id."""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime

import pytest
from sqlalchemy.exc import OperationalError

from app.db import DEAD_PEER_SECONDS
from config.settings import Settings
from tests.fleet.conftest import FLEET_ENV, LEASE_SECONDS, Fleet, Host, record_figures, wait_for
from tests.support.processes import start_process, stop_process
from workers.leader import LOCK_KEY

pytestmark = pytest.mark.fleet

# Beyond a lease running out: the next sweep (0.5 s), a drain waking and claiming.
TAKEOVER_SLACK_SECONDS = 1.5
# The longest the fleet may go without a sweep after the scheduler's host dies.
SWEEP_GAP_SECONDS = 2.5
JOB_PROCESSES_A_HOST = Settings.from_env(FLEET_ENV).job_concurrency


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


def busiest(fleet: Fleet) -> Host | None:
    """The host holding the most delivery leases right now, if any holds one."""
    rows = fleet.sql(
        "SELECT host(a.host) FROM delivery d JOIN fleet_audit a "
        "ON a.kind = 'delivery.lease' AND a.item = d.id AND a.lease = d.lease_id "
        "WHERE d.status = 'pending' AND d.locked_until > now() "
        "GROUP BY a.host ORDER BY count(*) DESC LIMIT 1"
    )
    return fleet.host_at(rows[0][0]) if rows else None


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


def taken_over(fleet: Fleet, lost: Host, held: dict[str, set[str]], since: float) -> dict:
    """When the last of the held deliveries, and of the held jobs, was leased again by another
    host (epoch; None where none was held)."""
    taken: dict[str, float | None] = {}
    for name, kind in (("deliveries", "delivery.lease"), ("jobs", "job.claim")):
        firsts: dict[str, float] = {}
        for host, item, _, at in fleet.audit(kind, since):
            if item in held[name] and host != lost.address:
                firsts.setdefault(item, at)
        missing = held[name] - set(firsts)
        assert not missing, f"{len(missing)} {name} were never leased by another host"
        taken[name] = max(firsts.values()) if firsts else None
    return taken


def test_a_host_killed_mid_burst_has_its_leases_finished_by_the_others_within_one_lease(
    fleet: Fleet,
):
    fleet.register("/killed", max_concurrency=1000)
    fleet.receiver.behave("/killed", delay_seconds=1.0)
    # 20 attempts in flight a host, each taking a second: the burst lasts seconds.
    fleet.add_hosts(3, BOOMERANG_DELIVERY_CONCURRENCY="20")
    job_ids = fleet.submit(300)
    wait_for(lambda: fleet.receiver.stats("/killed")["count"] >= 100, 60, "the burst")
    # One for each job process of the fleet, so the host that dies is likely running one.
    job_ids += fleet.submit(6, "sleep", seconds=2)
    wait_for(
        lambda: fleet.sql("SELECT 1 FROM job WHERE type = 'sleep' AND status = 'running'"),
        10,
        "a sleep job to start",
    )

    victim = wait_for(lambda: busiest(fleet), 10, "a host holding deliveries")
    victim.kill()
    killed_at = time.time()
    # A dead host changes nothing: what it holds now is what it held when it died.
    held = held_by(fleet, victim)
    assert held["deliveries"], "the killed host held no delivery"

    finished_at = wait_until_finished(fleet, held)
    taken = taken_over(fleet, victim, held, killed_at)
    fleet.wait_until_received(job_ids)
    figures = fleet.tally(job_ids)
    recovery = finished_at - killed_at
    deliveries_taken = taken["deliveries"] - killed_at
    jobs_taken = taken["jobs"] - killed_at if taken["jobs"] is not None else None
    record_figures(
        "a host SIGKILLed mid-burst",
        figures,
        recovery,
        hosts=3,
        held_deliveries=len(held["deliveries"]),
        held_jobs=len(held["jobs"]),
        deliveries_taken_over_seconds=round(deliveries_taken, 2),
        jobs_taken_over_seconds=round(jobs_taken, 2) if jobs_taken is not None else None,
    )
    assert figures.lost == 0
    assert figures.jobs_finished_twice == 0
    assert figures.unique == figures.submitted
    fleet.assert_settled()
    # Its delivery leases ran out within one lease of its death and the others took them at
    # once (a drain claims an expired lease itself), then delivered them (1 s each here).
    assert deliveries_taken <= LEASE_SECONDS + TAKEOVER_SLACK_SECONDS
    # Its jobs too: a busy job drain takes over a dead worker's expired job leases itself (at
    # most a second late), and an idle jobs worker takes the sweep.
    if jobs_taken is not None:
        assert jobs_taken <= LEASE_SECONDS + TAKEOVER_SLACK_SECONDS
    # The sleep jobs it held start again from the beginning (2 s each) on the two survivors' job
    # processes. A drain claims several jobs at once and hands back the unstarted ones only a
    # quarter second into a long job, so a host that dies at once may hold all six: two rounds.
    rounds = math.ceil(len(held["jobs"]) / (2 * JOB_PROCESSES_A_HOST))
    assert recovery <= LEASE_SECONDS + TAKEOVER_SLACK_SECONDS + (2.5 * rounds if rounds else 1.5)


def running_a_job(fleet: Fleet, hosts: list[Host]) -> Host | None:
    """Of ``hosts``, the one holding the most delivery leases among those running a job."""
    holding = [host for host in hosts if held_by(fleet, host)["jobs"]]
    return max(holding, key=lambda h: len(held_by(fleet, h)["deliveries"]), default=None)


def test_a_partitioned_host_writes_nothing_while_cut_off_and_its_stale_results_are_refused(
    fleet: Fleet,
):
    fleet.register("/cut", max_concurrency=1000)
    fleet.receiver.behave("/cut", delay_seconds=0.3)
    hosts = fleet.add_hosts(3)
    job_ids = fleet.submit(300)
    wait_for(lambda: fleet.receiver.stats("/cut")["count"] >= 60, 60, "the burst to start")
    # The cut-off host is running one when the link goes down: its next progress report (they
    # come every second) waits for Postgres until the link is back, and is then refused.
    job_ids += fleet.submit(3, "sleep", seconds=8)
    victim = wait_for(lambda: running_a_job(fleet, hosts), 10, "a host running a sleep job")

    victim.cut_off()
    cut_at = time.time()
    held = held_by(fleet, victim)
    stale_leases = {
        str(lease)
        for table, ids in (("job", held["jobs"]), ("delivery", held["deliveries"]))
        for (lease,) in fleet.sql(
            f"SELECT lease_id FROM {table} WHERE id = ANY(CAST(:ids AS uuid[]))", ids=list(ids)
        )
    }
    time.sleep(2 * LEASE_SECONDS)
    healed_at = time.time()
    victim.reconnect()

    fleet.wait_until_received(job_ids)
    finished_at = wait_until_finished(fleet, held)
    figures = fleet.tally(job_ids)
    # Nothing from the cut-off host reached Postgres while it was cut off (a statement already
    # on its way when the link went down may land a moment later).
    written = [
        (kind, at)
        for kind in ("delivery.lease", "delivery.settle", "attempt", "job.claim", "job.finish")
        for host, _, _, at in fleet.audit(kind, cut_at + 0.2)
        if host == victim.address and at < healed_at
    ]
    # What it held was finished by the others, and none of its stale results counted: nothing
    # ended under a lease it held when it was cut off. (Once healed, it may lease some of the
    # same work again, and end it under the new lease.)
    stale_job_finishes = [
        item
        for host, item, lease, _ in fleet.audit("job.finish", cut_at)
        if item in held["jobs"] and host == victim.address and lease in stale_leases
    ]
    stale_settles = [
        item
        for host, item, lease, _ in fleet.audit("delivery.settle", healed_at)
        if item in held["deliveries"] and host == victim.address and lease in stale_leases
    ]
    refused = victim.log("jobs").count("lease lost")
    record_figures(
        "a host partitioned for two leases mid-burst",
        figures,
        finished_at - healed_at,
        hosts=3,
        partition_seconds=round(healed_at - cut_at, 2),
        held_deliveries=len(held["deliveries"]),
        held_jobs=len(held["jobs"]),
        writes_while_cut_off=len(written),
        stale_results_refused=refused,
    )
    assert written == []
    assert held["jobs"], "the cut-off host was running no job"
    assert stale_job_finishes == []
    assert stale_settles == []
    # Its sleep job went on reporting progress after the heal, and was told it had lost it.
    wait_for(lambda: "lease lost" in victim.log("jobs"), 30, "the stale job to be refused")
    assert figures.lost == 0
    assert figures.jobs_finished_twice == 0
    assert figures.unique == figures.submitted
    fleet.assert_settled(timeout=60)


def scheduler(fleet: Fleet) -> tuple[Host, bool]:
    """The host whose beat holds beat's advisory lock (the leader) and True; if none does (every
    beat schedules), the first host and False."""
    # A bigint advisory lock shows in pg_locks as its two halves.
    holders = fleet.sql(
        "SELECT DISTINCT host(a.client_addr) FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND (l.classid::bigint << 32 | l.objid::bigint) = :key",
        key=LOCK_KEY,
    )
    addresses = {host.address for host in fleet.hosts}
    for (address,) in holders:
        if address in addresses:
            return fleet.host_at(address), True
    return fleet.hosts[0], False


def sweep_times(host: Host, since: float) -> list[float]:
    """When the host's workers finished each sweep after ``since`` (epoch). Both take it from
    the maintenance queue, whichever has a process free first."""
    times = []
    for worker in ("jobs", "deliveries"):
        for line in host.log(worker).splitlines():
            if "boomerang.sweep[" in line and " succeeded in " in line:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= since:
                    times.append(at)
    return times


def test_when_the_scheduler_host_dies_retries_and_the_recovery_sweep_still_fire_on_time(
    fleet: Fleet,
):
    fleet.register("/scheduled", max_concurrency=1000)
    # Every event's first attempt fails: each needs a retry, due 1 s later.
    fleet.receiver.behave("/scheduled", fail_first=1)
    fleet.add_hosts(3)
    victim, leader_elected = scheduler(fleet)
    sleepers = fleet.submit(6, "sleep", seconds=3)
    wait_for(lambda: held_by(fleet, victim)["jobs"], 15, "the scheduler host to run a job")

    victim.kill()
    killed_at = time.time()
    stranded = {
        str(job_id): float(lease_end)
        for job_id, lease_end in fleet.sql(
            "SELECT id, extract(epoch FROM locked_until) FROM job "
            "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running'",
            ids=list(held_by(fleet, victim)["jobs"]),
        )
    }
    echoes = fleet.submit(30)
    fleet.wait_until_received(sleepers + echoes)
    # Where beat is leader-elected, a surviving host's beat leads now.
    successor, _ = scheduler(fleet)
    figures = fleet.tally(sleepers + echoes)
    survivors = [host for host in fleet.hosts if host is not victim]

    # The recovery sweep: each job the dead host was running was queued again soon after its
    # lease ran out, by a sweep only the surviving hosts' beat can have scheduled.
    # The first requeue of each: once queued again, a surviving drain claims the batch, runs one
    # and hands the rest back while that one runs, and each hand-back is a requeue too.
    requeued: dict[str, float] = {}
    for _, item, _, at in fleet.audit("job.requeue", killed_at):
        requeued.setdefault(item, at)
    requeue_delays = [requeued[job] - lease_end for job, lease_end in stranded.items()]
    # The periodic sweep itself never paused for long.
    sweeps = sorted(at for host in survivors for at in sweep_times(host, killed_at))
    sweep_gaps = [b - a for a, b in zip([killed_at, *sweeps], sweeps, strict=False)]
    # Retries: each echo's event failed once and came again on schedule.
    arrivals: dict[str, list[float]] = {}
    for record in fleet.receiver.records("/scheduled"):
        if record["job_id"] in echoes:
            arrivals.setdefault(record["webhook_id"], []).append(record["at"])
    retry_gaps = [times[1] - times[0] for times in arrivals.values() if len(times) > 1]
    record_figures(
        "the scheduler's host SIGKILLed",
        figures,
        max(sweep_gaps),
        hosts=3,
        leader_elected=leader_elected,
        new_leader=successor.name if leader_elected else None,
        stranded_jobs=len(stranded),
        max_requeue_after_lease_seconds=round(max(requeue_delays), 2),
        sweeps_after_kill=len(sweeps),
        max_retry_gap_seconds=round(max(retry_gaps), 2),
    )
    assert stranded, "the scheduler host was running no job"
    if leader_elected:
        assert successor is not victim
    assert set(stranded) <= set(requeued)
    assert max(requeue_delays) <= TAKEOVER_SLACK_SECONDS
    # Sweeps come every 0.5 s; a leader-elected beat also needs a moment to replace its leader.
    assert max(sweep_gaps) <= SWEEP_GAP_SECONDS
    assert len(retry_gaps) == len(echoes)
    # Due 1 s (jitter 10 %) after the failure; a sweep every 0.5 s wakes a drain for it.
    assert max(retry_gaps) <= 1.1 + TAKEOVER_SLACK_SECONDS
    assert figures.lost == 0
    assert figures.jobs_finished_twice == 0
    assert figures.unique == figures.submitted
    fleet.assert_settled()


# A process on the host that takes a row lock in a transaction and then waits, holding it.
HOLD_A_LOCK = """
import sys, time
from sqlalchemy import text
from app.db import make_engine
from config.settings import Settings
with make_engine(Settings.from_env()).connect() as conn:
    conn.execute(text("SELECT id FROM tenant WHERE id = :id FOR UPDATE"), {"id": sys.argv[1]})
    print("locked", flush=True)
    time.sleep(600)
"""


def row_is_free(fleet: Fleet, tenant_id: str) -> bool:
    try:
        fleet.sql(
            "SELECT id FROM tenant WHERE id = CAST(:id AS uuid) FOR UPDATE NOWAIT", id=tenant_id
        )
    except OperationalError as exc:
        if "could not obtain lock" in str(exc):
            return False
        raise
    return True


def test_a_host_cut_off_inside_a_transaction_has_its_session_ended_and_its_locks_freed(
    fleet: Fleet,
):
    host = fleet.add_host(kinds=())
    tenant_id = fleet.account.tenant_id
    holder = start_process(
        host.namespace.command([sys.executable, "-c", HOLD_A_LOCK, tenant_id]),
        host.env,
        host.log_dir / "holder.log",
    )
    try:
        wait_for(lambda: "locked" in host.log("holder"), 30, "the host to take its lock")
        assert not row_is_free(fleet, tenant_id)

        # Its link goes down with the transaction open, perhaps before it acknowledged the
        # answer that said it held the lock: no packet, not even a reset, reaches Postgres,
        # which would otherwise keep the session and its lock until TCP gave up.
        host.cut_off()
        cut_at = time.time()
        time.sleep(1)
        assert not row_is_free(fleet, tenant_id), "the lock went before the keepalives could end it"
        wait_for(lambda: row_is_free(fleet, tenant_id), 60, "the lock to be freed")
        freed_after = time.time() - cut_at
        sessions = fleet.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr = CAST(:host AS inet)",
            host=host.address,
        )[0][0]
        print(
            json.dumps(
                {
                    "test": "a host cut off inside a transaction",
                    "lock_freed_after_seconds": round(freed_after, 2),
                }
            )
        )
        assert sessions == 0
        # Postgres ended the session: its keepalives (2 s idle, then three probes 1 s apart) or
        # its TCP user timeout (5 s); the poll above and the kernel's timers add a few seconds.
        assert freed_after <= DEAD_PEER_SECONDS + 4
    finally:
        stop_process(holder, timeout=5)
