"""Per-callback limits hold across processes: three delivery processes, one callback, and a
receiver that measures what it was sent. The limits live in Redis, so the same holds for
processes on other hosts (tests/fleet shows them there)."""

from __future__ import annotations

import time

import pytest

from app.receiver import Receiver, busiest_second, peak_in_flight
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

DELIVERY_PROCESSES = 3


@pytest.fixture
def fleet_stack(worker_id, tmp_path):
    """The stack with three delivery processes sharing one private Redis."""
    database = database_name("limits", worker_number(worker_id))
    with running_stack(
        database, tmp_path, FAULT_ENV, kind=FaultStack, delivery_processes=DELIVERY_PROCESSES
    ) as stack:
        yield stack


@pytest.fixture
def fleet_account(fleet_stack) -> Account:
    created = fleet_stack.create_tenant("limits")
    return Account(api_key=created["api_key"], signing_secret=created["signing_secret"])


def register(stack: FaultStack, account: Account, url: str, **limits: float) -> None:
    response = stack.api(account, "POST", "/v1/callbacks", json={"url": url, **limits})
    assert response.status_code == 201, response.text
    account.callback_secrets[url] = response.json()["secret"]


def test_a_callbacks_max_concurrency_holds_across_every_delivery_process(
    fleet_stack, fleet_account, receiver: Receiver
):
    receiver.answer("/capped", 200, delay_seconds=0.3)
    url = receiver.url("/capped")
    register(fleet_stack, fleet_account, url, max_concurrency=3)

    job_ids = fleet_stack.submit(fleet_account, 60)
    seconds = wait_until_received(receiver, "/capped", job_ids, timeout=90)

    seen = receiver.received("/capped")
    figures = tally(receiver, "/capped", fleet_account.callback_secrets[url], job_ids)
    peak = peak_in_flight(seen)
    record_figures("max_concurrency_across_processes", figures, seconds, peak_in_flight=peak)
    assert figures.lost == 0
    # Three processes, each free to hold 256 attempts: the receiver never held more than three.
    assert peak <= 3
    # And the cap is a limit, not a trickle: the work was shared out up to it.
    assert peak == 3


def test_a_callbacks_rate_holds_across_every_delivery_process_and_nothing_is_dropped(
    fleet_stack, fleet_account, receiver: Receiver
):
    url = receiver.url("/metered")
    register(fleet_stack, fleet_account, url, rate_limit_per_second=10)

    job_ids = fleet_stack.submit(fleet_account, 60)
    seconds = wait_until_received(receiver, "/metered", job_ids, timeout=90)

    seen = receiver.received("/metered")
    figures = tally(receiver, "/metered", fleet_account.callback_secrets[url], job_ids)
    busiest = busiest_second(seen)
    record_figures("rate_across_processes", figures, seconds, busiest_second=busiest)
    assert figures.lost == 0
    # 10 a second with a burst of 1; the stated tolerance is 2 for arrival jitter between
    # processes (an attempt admitted at t may arrive a little after one admitted later).
    assert busiest <= 10 + 1 + 2
    # Shaped, not dropped: sixty at ten a second take about six seconds.
    assert seconds >= 4


def test_a_failing_receiver_sees_its_concurrency_fall_then_recover_when_it_heals(
    fleet_stack, fleet_account, receiver: Receiver
):
    receiver.answer("/sick", 503, delay_seconds=0.2)
    url = receiver.url("/sick")
    register(fleet_stack, fleet_account, url)
    # A backlog first, so that concurrency is bounded by the limit, not by how fast jobs finish.
    fleet_stack.stop("deliveries")
    job_ids = fleet_stack.submit(fleet_account, 300)
    wait_for_jobs_to_finish(fleet_stack, len(job_ids))

    fleet_stack.start("deliveries")
    receiver.wait_for(1, "/sick", timeout=30)
    failing_from = time.time()
    time.sleep(8)
    receiver.answer("/sick", 200, delay_seconds=0.2)
    healed_at = time.time()
    seconds = wait_until_received(receiver, "/sick", job_ids, timeout=120)

    seen = receiver.received("/sick")
    figures = tally(receiver, "/sick", fleet_account.callback_secrets[url], job_ids)
    at_first = peak_in_flight(seen, failing_from, failing_from + 0.5)
    while_failing = peak_in_flight(seen, failing_from + 5, healed_at)
    after_healing = peak_in_flight(seen, healed_at + 1, healed_at + 30)
    record_figures(
        "adaptive_limit_across_processes",
        figures,
        seconds,
        peak_at_first=at_first,
        peak_while_failing=while_failing,
        peak_after_healing=after_healing,
    )
    assert figures.lost == 0
    # Three processes start at the shared limit of 8 (not 3 times 8), halve it on each second of
    # 503s, down to one or two...
    assert 2 < at_first <= 8
    assert while_failing <= 2
    # ...and grow it back, one per answer, once the receiver heals.
    assert after_healing >= 8


def wait_for_jobs_to_finish(stack: FaultStack, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.sql("SELECT count(*) FROM job WHERE status = 'succeeded'")[0][0] >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} jobs did not finish in {timeout} s")
