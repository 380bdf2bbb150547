"""Redis high availability across hosts: the broker's primary, its replica and three sentinels each
on a host of their own, and the machine holding the primary dies mid-burst. The sentinels promote
the replica, every process (the API, three worker hosts) follows it through its ``sentinel://``
REDIS_URL, and every job still reaches the callback exactly once by webhook-id."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.conftest import FLEET_ENV, Fleet, FleetNetwork, record_figures
from tests.support.netns import Namespace
from tests.support.sentinel_servers import Place, SentinelGroup
from tests.support.stack import Stack

pytestmark = pytest.mark.fleet

REDIS_PORT = 6379
SENTINEL_PORT = 26379
BURST = 300


class RedisHosts:
    """Three hosts: the primary and a sentinel on the first, the replica and a sentinel on the
    second, a third sentinel alone on the third (so losing any one host leaves a majority)."""

    def __init__(self, shared: FleetNetwork, log_dir: Path) -> None:
        self.shared = shared
        self.namespaces: list[Namespace] = []
        for label, number in (("ra", 3), ("rb", 4), ("rc", 5)):
            self.namespaces.append(shared.network.add(label, number))
        first, second, third = self.namespaces
        places = [
            Place(first.address, REDIS_PORT, first.command),
            Place(second.address, REDIS_PORT, second.command),
            *(Place(ns.address, SENTINEL_PORT, ns.command) for ns in (first, second, third)),
        ]
        self.group = SentinelGroup(log_dir, places)

    def host_of(self, endpoint: tuple[str, int]) -> Namespace:
        return next(ns for ns in self.namespaces if ns.address == endpoint[0])

    def remove(self) -> None:
        self.group.stop()
        for namespace in self.namespaces:
            self.shared.network.delete(namespace)


@pytest.fixture
def redis_hosts(fleet_network: FleetNetwork, tmp_path: Path) -> Iterator[RedisHosts]:
    log_dir = tmp_path / "redis-hosts"
    log_dir.mkdir()
    hosts = RedisHosts(fleet_network, log_dir)
    try:
        hosts.group.start()
        yield hosts
    finally:
        hosts.remove()


@pytest.fixture
def sentinel_web(fleet_network: FleetNetwork, redis_hosts: RedisHosts, tmp_path: Path):
    """An API whose REDIS_URL names the sentinels, on the fleet's database."""
    log_dir = tmp_path / "web"
    log_dir.mkdir()
    web = Stack(
        env={
            **FLEET_ENV,
            "DATABASE_URL": fleet_network.api.database_url,
            "REDIS_URL": redis_hosts.group.url,
        },
        log_dir=log_dir,
    )
    try:
        web.start("web")
        yield web
    finally:
        web.stop()


def test_the_host_of_the_redis_primary_dies_mid_burst_and_nothing_is_lost(
    fleet: Fleet, redis_hosts: RedisHosts, sentinel_web: Stack
):
    group = redis_hosts.group
    fleet.web = sentinel_web
    fleet.register("/failover")
    fleet.add_hosts(3, REDIS_URL=group.url)
    job_ids = fleet.submit(BURST)
    fleet.wait_until_unique(BURST // 5, timeout=60)

    # Submissions go on while the primary's host dies: each is committed in Postgres whatever
    # Redis does, and its wake is sent or skipped as Redis allows.
    during: list[str] = []
    submitting = threading.Thread(target=lambda: during.extend(fleet.submit(BURST)))
    submitting.start()
    time.sleep(0.5)
    old_primary = group.primary()
    faulted_at = time.monotonic()
    # The whole machine goes: the primary and the sentinel beside it.
    killed = redis_hosts.host_of(old_primary).kill_all()
    new_primary = group.wait_for_new_primary(old_primary, timeout=60)
    failover_seconds = time.monotonic() - faulted_at
    submitting.join()
    job_ids += during
    fleet.wait_until_received(job_ids, timeout=180)
    recover = time.monotonic() - faulted_at

    # Work submitted afterwards goes through the new primary too.
    after_started = time.monotonic()
    after = fleet.submit(30)
    fleet.wait_until_received(after, timeout=60)
    after_seconds = time.monotonic() - after_started
    job_ids += after

    figures = fleet.tally(job_ids)
    record_figures(
        "the Redis primary's host dies mid-burst (Sentinel, 3 worker hosts)",
        figures,
        recover,
        processes_killed=killed,
        failover_seconds=round(failover_seconds, 2),
        after_burst_seconds=round(after_seconds, 2),
        submitted_during_failover=len(during),
    )
    assert killed == 2
    assert new_primary == group.redis_places[1].endpoint
    assert figures.lost == 0
    assert figures.jobs_finished_twice == 0
    assert figures.unique == figures.submitted
    fleet.assert_settled()
