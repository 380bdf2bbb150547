"""Grey failures on the real stack: nothing is down, something is subtly wrong. A host whose
clock runs fast. After each: nothing lost, nothing sent twice, and the figures recorded."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from tests.faults.conftest import (
    FAULT_ENV,
    Account,
    FaultStack,
    record_figures,
    tally,
    wait_until_received,
)
from tests.support.settings import database_name, worker_number
from tests.support.stack import running_stack

pytestmark = pytest.mark.faults

SKEW_SECONDS = 300
RETRY_SECONDS = 3.0
# The receiver's clock and Postgres' are this host's; what is left is a query's round trip.
CLOCK_TOLERANCE_SECONDS = 0.05


class SkewedStack(FaultStack):
    """A FaultStack with a second delivery worker whose host clock runs five minutes fast."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_env["fast-deliveries"] = {"BOOMERANG_CLOCK_SKEW_SECONDS": str(SKEW_SECONDS)}

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()
        fast = list(commands["deliveries"])
        fast[fast.index("-n") + 1] = f"fast-deliveries-{self.web_port}@%h"
        return {**commands, "fast-deliveries": fast}


@pytest.fixture
def skewed_stack(worker_id, tmp_path):
    """The service with a normal and a fast delivery worker, and a fixed retry delay so an early
    retry shows at the receiver."""
    env = {**FAULT_ENV, "BOOMERANG_RETRY_SCHEDULE": "3,3,3", "BOOMERANG_RETRY_JITTER": "0"}
    database = database_name("grey", worker_number(worker_id))
    with running_stack(database, tmp_path, env, kind=SkewedStack) as stack:
        yield stack


def test_a_delivery_worker_five_minutes_fast_steals_no_lease_and_sends_no_early_retry(
    skewed_stack, receiver
):
    stack = skewed_stack
    created = stack.create_tenant("skew")
    account = Account(api_key=created["api_key"], signing_secret=created["signing_secret"])
    # Each first attempt is held for a second (a lease a fast clock would see as long expired),
    # then fails; the retry succeeds.
    first_answer_seconds = 1.0
    receiver.answer("/skew", 500, 200, per_message=True, delays=[first_answer_seconds, 0.0])
    url = receiver.url("/skew")
    stack.register(account, url)

    started = time.monotonic()
    job_ids = stack.submit(account, 100)
    wait_until_received(receiver, "/skew", job_ids, timeout=60)
    recover = time.monotonic() - started

    arrivals: dict[str, list[float]] = defaultdict(list)
    for request in receiver.received("/skew"):
        arrivals[request.webhook_id].append(request.at)
    sends = Counter({webhook: len(times) for webhook, times in arrivals.items()})
    # A retry may be sent no sooner than its delay after the failed attempt was answered.
    early = {
        webhook: round(times[1] - times[0] - first_answer_seconds, 3)
        for webhook, times in arrivals.items()
        if len(times) > 1
        and times[1] - times[0] - first_answer_seconds < RETRY_SECONDS - CLOCK_TOLERANCE_SECONDS
    }
    gaps = [
        times[1] - times[0] - first_answer_seconds for times in arrivals.values() if len(times) > 1
    ]
    logged = stack.sql("SELECT count(*) FROM delivery_attempt GROUP BY delivery_id")
    fast_log = stack.log("fast-deliveries")
    fast_failures = fast_log.count("receiver answered 500")

    figures = tally(receiver, "/skew", account.callback_secrets[url], job_ids)
    record_figures(
        f"one delivery worker's clock {SKEW_SECONDS} s fast",
        figures,
        recover,
        sent_more_than_twice=sum(1 for count in sends.values() if count > 2),
        logged_attempts_other_than_two=sum(1 for (count,) in logged if count != 2),
        early_retries=len(early),
        min_retry_gap_seconds=round(min(gaps), 3),
        retry_delay_seconds=RETRY_SECONDS,
        attempts_failed_by_the_fast_worker=fast_failures,
    )
    assert "ahead of Postgres" in fast_log  # the fast host noticed, and used Postgres' time
    assert fast_failures > 0  # and it took part
    assert figures.lost == 0
    assert figures.bad_signatures == 0
    assert figures.unique == figures.submitted
    assert figures.duplicates_with_same_id == 0
    # Each attempt sent once: the failed one, then the retry, at the receiver and in the log.
    assert set(sends.values()) == {2}, sends.most_common(3)
    assert len(logged) == len(job_ids)
    assert {count for (count,) in logged} == {2}
    assert early == {}
