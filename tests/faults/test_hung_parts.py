"""Hung, not only dead: Redis or Postgres frozen with SIGSTOP, so connections stay open and
nothing answers. The API must keep answering within a bound meanwhile, and once the part goes on
(SIGCONT) every accepted job's callback arrives, each under one webhook-id."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.faults.conftest import (
    FAULT_ENV,
    Account,
    FaultStack,
    record_figures,
    tally,
    wait_until_received,
)
from tests.faults.test_faults import assert_nothing_left
from tests.support.postgres_server import PostgresServer
from tests.support.settings import database_name, worker_number
from tests.support.stack import running_stack

pytestmark = pytest.mark.faults

HANG_SECONDS = 10.0
IN_FLIGHT = 20


@dataclass
class Call:
    """One API call made while a part was hung."""

    path: str
    status: int | None  # None: no answer before the client gave up
    seconds: float
    job_id: str | None = None
    retry_after: str | None = None
    is_json: bool = False


def call(stack: FaultStack, account: Account, method: str, path: str, **kwargs) -> Call:
    """Make one API call, timed; a call that gets no answer in 15 s is recorded as such."""
    started = time.monotonic()
    try:
        response = stack.api(account, method, path, **kwargs)
    except requests.RequestException:
        return Call(path, None, time.monotonic() - started)
    seconds = time.monotonic() - started
    is_json = response.headers.get("Content-Type", "").startswith("application/json")
    body = response.json() if is_json else {}
    job_id = body.get("id") if method == "POST" and response.status_code == 202 else None
    return Call(
        path, response.status_code, seconds, job_id, response.headers.get("Retry-After"), is_json
    )


def keep_calling(stack: FaultStack, account: Account, seconds: float, known_job: str) -> list[Call]:
    """For ``seconds``, from a few threads at once: submit jobs, read one, list jobs, and probe
    /readyz and /healthz; every call, timed."""
    calls: list[Call] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(make: Callable[[int], Call]) -> None:
        number = 0
        while time.monotonic() < deadline:
            made = make(number)
            with lock:
                calls.append(made)
            number += 1
            time.sleep(0.05)

    def submit(number: int) -> Call:
        body = {"type": "echo", "input": {"hung": number}}
        return call(stack, account, "POST", "/v1/jobs", json=body)

    makers: list[Callable[[int], Call]] = [
        submit,
        submit,
        submit,
        lambda _n: call(stack, account, "GET", f"/v1/jobs/{known_job}"),
        lambda _n: call(stack, account, "GET", "/v1/jobs?limit=5"),
        lambda _n: call(stack, account, "GET", "/readyz"),
        lambda _n: call(stack, account, "GET", "/healthz"),
    ]
    threads = [threading.Thread(target=loop, args=(make,)) for make in makers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return calls


@contextlib.contextmanager
def hung(hang: Callable[[], None], unhang: Callable[[], None]) -> Iterator[None]:
    """The part frozen for the block, and always let go after it."""
    hang()
    try:
        yield
    finally:
        unhang()


def run_hang(
    stack: FaultStack,
    account: Account,
    receiver,
    path: str,
    hang: Callable[[], None],
    unhang: Callable[[], None],
) -> tuple[list[Call], list[str], float]:
    """Deliver a few jobs, submit a burst and at once freeze the part for HANG_SECONDS while
    calling the API, let it go and wait for every accepted job's callback: the calls, the
    accepted job ids and the seconds from letting go until the last callback arrived."""
    url = receiver.url(path)
    stack.register(account, url)
    before = stack.submit(account, 10)
    wait_until_received(receiver, path, before, timeout=60)
    # Caught mid-flight by the hang: jobs queued or running (each takes a while), deliveries
    # leased or being sent.
    before += stack.submit(account, IN_FLIGHT, job_type="sleep", input_={"seconds": 0.5})
    with hung(hang, unhang):
        calls = keep_calling(stack, account, HANG_SECONDS, before[0])
    let_go_at = time.monotonic()
    accepted = before + [c.job_id for c in calls if c.job_id is not None]
    wait_until_received(receiver, path, accepted, timeout=60)
    return calls, accepted, time.monotonic() - let_go_at


def report(
    name: str,
    stack: FaultStack,
    account: Account,
    receiver,
    path: str,
    calls,
    accepted,
    recover: float,
    bound: float,
) -> dict:
    """Record and print the scenario's figures; they are asserted by the caller."""
    figures = tally(receiver, path, account.callback_secrets[receiver.url(path)], accepted)
    posts = [c for c in calls if c.path == "/v1/jobs"]
    within = [c for c in calls if c.status is not None and c.seconds <= bound]
    slowest = max(c.seconds for c in calls)
    before = figures.submitted - sum(1 for c in posts if c.status == 202)
    extra = {
        # Submissions made in all (a few before the hang, the rest during it) and accepted.
        "submitted": before + len(posts),
        "accepted": figures.submitted,
        "hang_seconds": HANG_SECONDS,
        "calls": len(calls),
        "answered_within_bound": len(within),
        "bound_seconds": bound,
        "slowest_seconds": round(slowest, 3),
        "submitted_during_hang": len(posts),
        "accepted_during_hang": sum(1 for c in posts if c.status == 202),
        "statuses": sorted({str(c.status) for c in calls}),
        "received": figures.delivered,
    }
    record_figures(name, figures, recover, **extra)
    return {"figures": figures, **extra}


def assert_answered_within(calls: list[Call], bound: float) -> None:
    late = [c for c in calls if c.status is None or c.seconds > bound]
    assert not late, f"{len(late)} calls over {bound} s, e.g. {late[:5]}"


def test_a_hung_redis_leaves_the_api_answering_and_loses_nothing(fault_stack, account, receiver):
    redis_server = fault_stack.redis_server
    calls, accepted, recover = run_hang(
        fault_stack, account, receiver, "/redis-hung", redis_server.hang, redis_server.unhang
    )
    seen = report(
        "Redis hung (SIGSTOP) 10 s",
        fault_stack,
        account,
        receiver,
        "/redis-hung",
        calls,
        accepted,
        recover,
        bound=5.0,
    )

    # A call may pay a 0.5 s Redis timeout more than once, on a loaded host on top of its usual
    # time; one that waited on the hung Redis would take the whole 10 s hang.
    assert_answered_within(calls, 5.0)
    posts = [c for c in calls if c.path == "/v1/jobs"]
    # Postgres is the source of truth: every submission is accepted while Redis is hung.
    assert posts and all(c.status == 202 for c in posts)
    assert {c.status for c in calls if c.path == "/healthz"} == {200}
    ready = [c for c in calls if c.path == "/readyz"]
    assert 503 in {c.status for c in ready}
    assert all(c.retry_after for c in ready if c.status == 503)
    figures = seen["figures"]
    assert figures.lost == 0
    assert figures.bad_signatures == 0
    assert figures.unique == figures.submitted
    assert recover < 45


@pytest.fixture
def private_postgres(tmp_path):
    """A Postgres server of this test's own, which it may freeze."""
    server = PostgresServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack_on_private_postgres(worker_id, tmp_path, private_postgres):
    """The fault stack, its database on ``private_postgres``; an API request waits on Postgres
    2 s in all (4 s by default), so the test's 5 s bound leaves a loaded host room to answer."""
    database = database_name("hung", worker_number(worker_id))
    env = {**FAULT_ENV, "BOOMERANG_REQUEST_DATABASE_SECONDS": "2"}
    with running_stack(
        database, tmp_path, env, kind=FaultStack, postgres_url=private_postgres.url
    ) as stack:
        yield stack


def test_a_hung_postgres_gets_503s_in_bounded_time_and_loses_nothing(
    stack_on_private_postgres, private_postgres, receiver
):
    stack = stack_on_private_postgres
    created = stack.create_tenant("faults")
    account = Account(api_key=created["api_key"], signing_secret=created["signing_secret"])
    calls, accepted, recover = run_hang(
        stack, account, receiver, "/postgres-hung", private_postgres.hang, private_postgres.unhang
    )
    seen = report(
        "Postgres hung (SIGSTOP) 10 s",
        stack,
        account,
        receiver,
        "/postgres-hung",
        calls,
        accepted,
        recover,
        bound=5.0,
    )

    # Within the request's 2 s on Postgres and then some; under the 6 s a statement would wait
    # without the request's deadline (statement timeout and grace), and the 10 s hang.
    assert_answered_within(calls, 5.0)
    # The probe that does not touch Postgres answers throughout: no gunicorn worker is stuck.
    assert {c.status for c in calls if c.path == "/healthz"} == {200}
    unavailable = [c for c in calls if c.status == 503]
    assert unavailable, "a frozen Postgres went unnoticed"
    assert all(c.retry_after and c.is_json for c in unavailable)
    assert {c.status for c in calls} <= {200, 202, 503}
    figures = seen["figures"]
    assert figures.lost == 0
    assert figures.bad_signatures == 0
    assert figures.unique == figures.submitted
    assert recover < 60
    # Nothing stays leased or unfinished once Postgres goes on. A job a worker had leased when
    # Postgres froze is taken over once its lease (5 s here) runs out.
    unfinished = "SELECT id, status, attempts, error FROM job WHERE status <> 'succeeded'"
    deadline = time.monotonic() + 30
    while stack.sql(unfinished) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.sql(unfinished) == []
    assert_nothing_left(stack)
