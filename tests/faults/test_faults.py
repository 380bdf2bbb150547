"""Real faults injected into the real stack. After each: every job reached every matching
callback, nothing under a second webhook-id, every signature valid."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from tests.faults.conftest import record_figures, tally, wait_until_received

pytestmark = pytest.mark.faults


def wait_for(predicate, timeout: float = 60, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


def assert_clean(fault_stack, figures):
    assert figures.lost == 0
    assert figures.bad_signatures == 0
    assert figures.unique == figures.submitted
    assert_nothing_left(fault_stack)


def assert_nothing_left(fault_stack, timeout: float = 30):
    """Every delivery ends succeeded and no lease stays held. A duplicate attempt may still be
    finishing when the receiver has seen everything, so give the stack a moment to settle."""

    def leftovers() -> int:
        return fault_stack.sql(
            "SELECT count(*) FROM delivery WHERE status <> 'succeeded' OR locked_until > now()"
        )[0][0]

    deadline = time.monotonic() + timeout
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == 0


def test_a_delivery_worker_killed_mid_burst_loses_nothing(fault_stack, account, receiver):
    url = receiver.url("/burst")
    fault_stack.register(account, url)
    job_ids = fault_stack.submit(account, 500)
    receiver.wait_for(100, "/burst", timeout=60)

    fault_stack.stop("deliveries", sig=signal.SIGKILL)
    killed_at = time.monotonic()
    fault_stack.start("deliveries")
    wait_until_received(receiver, "/burst", job_ids)
    recover = time.monotonic() - killed_at

    figures = tally(receiver, "/burst", account.callback_secrets[url], job_ids)
    record_figures("delivery worker SIGKILL mid-burst", figures, recover)
    assert_clean(fault_stack, figures)


def test_a_jobs_worker_killed_mid_job_runs_it_again(fault_stack, account, receiver):
    url = receiver.url("/slow-job")
    fault_stack.register(account, url)
    (job_id,) = fault_stack.submit(account, 1, job_type="sleep", input_={"seconds": 2})
    wait_for(
        lambda: fault_stack.api(account, "GET", f"/v1/jobs/{job_id}").json()["status"] == "running",
        message="the sleep job to start",
    )

    fault_stack.stop("jobs", sig=signal.SIGKILL)
    killed_at = time.monotonic()
    fault_stack.start("jobs")
    wait_until_received(receiver, "/slow-job", [job_id], timeout=60)
    recover = time.monotonic() - killed_at

    job = fault_stack.api(account, "GET", f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    figures = tally(receiver, "/slow-job", account.callback_secrets[url], [job_id])
    record_figures("jobs worker SIGKILL mid-job", figures, recover)
    assert_clean(fault_stack, figures)


def test_redis_flushed_and_restarted_mid_burst_only_delays_work(fault_stack, account, receiver):
    url = receiver.url("/redis")
    fault_stack.register(account, url)
    job_ids = fault_stack.submit(account, 300)
    receiver.wait_for(50, "/redis", timeout=60)

    fault_stack.redis_server.flushall()
    fault_stack.redis_server.restart()
    faulted_at = time.monotonic()
    wait_until_received(receiver, "/redis", job_ids)
    recover = time.monotonic() - faulted_at

    figures = tally(receiver, "/redis", account.callback_secrets[url], job_ids)
    record_figures("Redis FLUSHALL + restart mid-burst", figures, recover)
    assert_clean(fault_stack, figures)


def test_postgres_connections_killed_mid_burst_lose_nothing(fault_stack, account, receiver):
    url = receiver.url("/postgres")
    fault_stack.register(account, url)
    job_ids = fault_stack.submit(account, 300)
    receiver.wait_for(30, "/postgres", timeout=60)

    database = fault_stack.database_url.rsplit("/", 1)[1]
    terminated = 0
    for _ in range(3):
        rows = fault_stack.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        terminated += len(rows)
        time.sleep(0.5)
    faulted_at = time.monotonic()
    wait_until_received(receiver, "/postgres", job_ids)
    recover = time.monotonic() - faulted_at

    assert terminated > 0
    figures = tally(receiver, "/postgres", account.callback_secrets[url], job_ids)
    record_figures(
        "Postgres backends terminated x3 mid-burst",
        figures,
        recover,
        connections_terminated=terminated,
    )
    assert_clean(fault_stack, figures)


def test_a_receiver_that_was_down_gets_everything_on_schedule(fault_stack, account, receiver):
    url = receiver.url("/down")
    fault_stack.register(account, url)
    receiver.go_down()
    job_ids = fault_stack.submit(account, 100)
    # The receiver stays down until every delivery has been refused at least once (and at least
    # 4 s): the learned limit lets a dead receiver have few requests at a time, so on a loaded
    # machine the first refusals of a hundred can take longer than that.
    down_at = time.monotonic()
    refused_deliveries = 0
    while time.monotonic() - down_at < 60:
        refused_deliveries = int(
            fault_stack.sql(
                "SELECT count(DISTINCT a.delivery_id) FROM delivery_attempt a"
                " JOIN delivery d ON d.id = a.delivery_id"
                " WHERE d.url = :url AND a.response_status IS NULL",
                url=url,
            )[0][0]
        )
        if refused_deliveries >= 100 and time.monotonic() - down_at >= 4:
            break
        time.sleep(0.2)
    refused_attempts = int(
        fault_stack.sql("SELECT count(*) FROM delivery_attempt WHERE response_status IS NULL")[0][0]
    )
    receiver.come_back()
    back_at = time.monotonic()
    (back_in_db,) = fault_stack.sql("SELECT now()")[0]
    wait_until_received(receiver, "/down", job_ids)
    recover = time.monotonic() - back_at

    assert refused_deliveries == 100, refused_deliveries
    # Once the receiver was back, each delivery's next attempt was its last: nothing failed. (A
    # second's grace: a worker stamps an attempt by its own reading of Postgres' clock, which on
    # a loaded machine may run a little ahead, so a refusal just before the return can look
    # just after it.)
    failures = fault_stack.sql(
        "SELECT attempted_at, response_status, error FROM delivery_attempt"
        " WHERE NOT succeeded AND attempted_at > :back + interval '1 second'",
        back=back_in_db,
    )
    failed_after = len(failures)
    assert failed_after == 0, (back_in_db, failures)
    figures = tally(receiver, "/down", account.callback_secrets[url], job_ids)
    record_figures(
        "receiver down 4 s, then back", figures, recover, refused_attempts=refused_attempts
    )
    assert_clean(fault_stack, figures)


def test_receivers_that_fail_throttle_or_hang_still_get_everything(fault_stack, account, receiver):
    receiver.answer("/errors", 500, 500, 200, per_message=True)
    receiver.answer("/throttled", 429, 200, headers={"Retry-After": "2"}, per_message=True)
    receiver.answer("/hangs", 200, per_message=True, delays=[3.0, 0.0])
    paths = ["/errors", "/throttled", "/hangs"]
    for path in paths:
        fault_stack.register(account, receiver.url(path))
    started = time.monotonic()
    job_ids = fault_stack.submit(account, 50)
    for path in paths:
        wait_until_received(receiver, path, job_ids)
    recover = time.monotonic() - started

    for path in paths:
        figures = tally(receiver, path, account.callback_secrets[receiver.url(path)], job_ids)
        record_figures(f"receiver {path}", figures, recover)
        assert figures.lost == 0
        assert figures.bad_signatures == 0
        assert figures.unique == len(job_ids)
    by_id: dict[str, list[float]] = {}
    for request in receiver.received("/throttled"):
        by_id.setdefault(request.headers["webhook-id"], []).append(request.at)
    assert all(len(times) >= 2 and times[1] - times[0] >= 1.9 for times in by_id.values())
    assert len(receiver.received("/errors")) >= 3 * len(job_ids)
    assert_nothing_left(fault_stack)
    # Every hanging first attempt was cut off at the read timeout and logged as such.
    timed_out = fault_stack.sql(
        "SELECT count(DISTINCT d.id) FROM delivery_attempt a"
        " JOIN delivery d ON d.id = a.delivery_id"
        f" WHERE d.url = '{receiver.url('/hangs')}' AND a.response_status IS NULL"
        " AND a.error ILIKE '%timed out%'"
    )[0][0]
    assert timed_out == len(job_ids)


def test_twenty_concurrent_submissions_with_one_idempotency_key_make_one_job(fault_stack, account):
    barrier = threading.Barrier(20)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def submit():
        barrier.wait()
        response = fault_stack.api(
            account,
            "POST",
            "/v1/jobs",
            json={"type": "echo", "input": {"order": 1}},
            headers={"Idempotency-Key": "order-1"},
        )
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(answers) == 20
    assert {r.json()["id"] for r in answers} == {answers[0].json()["id"]}
    assert sorted(r.status_code for r in answers) == [200] * 19 + [202]
    assert fault_stack.sql("SELECT count(*) FROM job")[0][0] == 1


def test_workers_stopped_with_sigterm_mid_burst_leave_nothing_lost_or_stuck(
    fault_stack, account, receiver
):
    url = receiver.url("/sigterm")
    fault_stack.register(account, url)
    job_ids = fault_stack.submit(account, 300)
    receiver.wait_for(50, "/sigterm", timeout=60)

    fault_stack.stop("jobs", "deliveries", sig=signal.SIGTERM)
    stopped_at = time.monotonic()
    held = fault_stack.sql(
        "SELECT (SELECT count(*) FROM delivery WHERE locked_until > now()) + "
        "(SELECT count(*) FROM job WHERE status = 'running' AND locked_until > now())"
    )[0][0]
    fault_stack.start("jobs", "deliveries")
    wait_until_received(receiver, "/sigterm", job_ids)
    recover = time.monotonic() - stopped_at

    figures = tally(receiver, "/sigterm", account.callback_secrets[url], job_ids)
    record_figures(
        "SIGTERM to workers mid-burst, restart", figures, recover, leases_held_after_shutdown=held
    )
    assert held == 0  # a warm shutdown finishes what it holds
    assert_clean(fault_stack, figures)
    assert fault_stack.sql("SELECT count(*) FROM job WHERE status <> 'succeeded'")[0][0] == 0
