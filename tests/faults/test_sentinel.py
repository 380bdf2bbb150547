"""Redis behind Sentinel: the primary fails over in the middle of a burst, and every callback still
arrives (duplicates only under the same webhook-id), with the whole stack on a ``sentinel://``
REDIS_URL: the web's producer and wakes, the workers' consumers, beat, the stream's subscription.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from app.announce import CHANNEL
from tests.faults.conftest import (
    FAULT_ENV,
    Account,
    FaultStack,
    record_figures,
    tally,
    wait_until_received,
)
from tests.faults.test_faults import assert_clean, wait_for
from tests.support.sentinel_servers import SentinelGroup
from tests.support.settings import database_name, worker_number
from tests.support.stack import running_stack

pytestmark = pytest.mark.faults


@pytest.fixture
def sentinel_group(tmp_path):
    """A primary, its replica and three sentinels, private to the test."""
    log_dir = tmp_path / "sentinel"
    log_dir.mkdir()
    group = SentinelGroup(log_dir)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def sentinel_stack(worker_id, tmp_path, sentinel_group):
    """The whole service with REDIS_URL naming the sentinels."""
    database = database_name("sentinel", worker_number(worker_id))
    with running_stack(
        database, tmp_path, FAULT_ENV, kind=FaultStack, redis_url=sentinel_group.url
    ) as stack:
        yield stack


@pytest.fixture
def sentinel_account(sentinel_stack) -> Account:
    created = sentinel_stack.create_tenant("sentinel")
    return Account(api_key=created["api_key"], signing_secret=created["signing_secret"])


def fail_over(group: SentinelGroup, how: str) -> tuple[str, int]:
    """Move the primary role to the replica; where the old primary was."""
    if how == "killed":
        return group.kill_primary()
    # A planned switch: the old primary lives on as a replica. Sentinel closes its clients as it
    # demotes it; a write that still reaches it is answered READONLY.
    return group.switch_primary()


@pytest.mark.parametrize("how", ["killed", "switched"])
def test_a_primary_failing_over_mid_burst_loses_no_callback(
    sentinel_group, sentinel_stack, sentinel_account, receiver, how
):
    stack, account = sentinel_stack, sentinel_account
    url = receiver.url("/failover")
    stack.register(account, url)
    job_ids = stack.submit(account, 150)
    receiver.wait_for(30, "/failover", timeout=60)

    # Submissions go on while the primary goes away: each is committed in Postgres whatever Redis
    # does, and its wake is skipped or sent as Redis allows.
    during: list[str] = []
    submitting = threading.Thread(target=lambda: during.extend(stack.submit(account, 150)))
    submitting.start()
    time.sleep(0.3)
    faulted_at = time.monotonic()
    old_primary = fail_over(sentinel_group, how)
    new_primary = sentinel_group.wait_for_new_primary(old_primary)
    failover_seconds = time.monotonic() - faulted_at
    submitting.join()
    job_ids += during
    wait_until_received(receiver, "/failover", job_ids)
    recover = time.monotonic() - faulted_at

    # The service now works through the new primary: its broker carries beat's sweep and the
    # wakes, so later work arrives too, the workers wait on its queues, and /readyz finds it.
    after_started = time.monotonic()
    after = stack.submit(account, 20)
    wait_until_received(receiver, "/failover", after, timeout=30)
    after_seconds = time.monotonic() - after_started
    assert requests.get(stack.base_url + "/readyz", timeout=5).json()["checks"]["redis"] == "ok"
    assert new_primary == sentinel_group.redis_places[1].endpoint
    new = sentinel_group.client(new_primary)
    # A worker whose pool is still busy draining does not ask for more (its consumer waits on
    # the pool, not on Redis), so give the drains time to go idle.
    wait_for(
        lambda: any(client["cmd"] == "brpop" for client in new.client_list()),
        timeout=30,
        message="a worker waiting on the new primary's queues",
    )
    # The stream's subscription was cut with the old primary (a demoted one too: Sentinel closes
    # its clients) and made again on the new one.
    wait_for(
        lambda: dict(new.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0) >= 1,
        timeout=10,
        message="the stream process subscribed on the new primary",
    )

    job_ids += after
    figures = tally(receiver, "/failover", account.callback_secrets[url], job_ids)
    record_figures(
        f"Sentinel failover mid-burst (primary {how})",
        figures,
        recover,
        failover_seconds=round(failover_seconds, 2),
        after_burst_seconds=round(after_seconds, 2),
        submitted_during_failover=len(during),
    )
    assert_clean(stack, figures)
