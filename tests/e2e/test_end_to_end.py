"""The real service end to end: gunicorn, Celery workers on Redis, beat, Postgres, a receiver."""

from __future__ import annotations

import json
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def account(stack):
    return stack.create_tenant("e2e")


def api(stack, account, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {account['api_key']}", **kwargs.pop("headers", {})}
    return requests.request(method, stack.base_url + path, headers=headers, timeout=10, **kwargs)


def wait_for_status(stack, account, job_id, statuses, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api(stack, account, "GET", f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def wait_for_deliveries(stack, account, job_id, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = api(stack, account, "GET", f"/v1/jobs/{job_id}/deliveries").json()["data"]
        if predicate(deliveries):
            return deliveries
        time.sleep(0.1)
    raise AssertionError(f"deliveries of {job_id} never matched: {deliveries}")


def test_a_submitted_job_reaches_its_callbacks_signed_and_logged(stack, account, receiver):
    registered = api(
        stack, account, "POST", "/v1/callbacks", json={"url": receiver.url("/registered")}
    )
    assert registered.status_code == 201, registered.text
    secret = registered.json()["secret"]

    submitted = time.time()
    response = api(
        stack,
        account,
        "POST",
        f"/v1/jobs?callbackURL={receiver.url('/adhoc')}",
        json={"type": "echo", "input": {"order": 17}},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"

    (pushed,) = receiver.wait_for(1, "/registered")
    (adhoc,) = receiver.wait_for(1, "/adhoc")
    payload = Webhook(secret).verify(pushed.body, pushed.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job_id
    assert payload["data"]["result"] == {"order": 17}
    Webhook(account["signing_secret"]).verify(adhoc.body, adhoc.headers)
    assert pushed.headers["webhook-id"] == adhoc.headers["webhook-id"]
    print(f"\necho job: submission to callback receipt {(pushed.at - submitted) * 1000:.0f} ms")

    deliveries = wait_for_deliveries(
        stack,
        account,
        job_id,
        lambda ds: len(ds) == 2 and all(d["status"] == "succeeded" for d in ds),
    )
    for delivery in deliveries:
        (attempt,) = delivery["attempts"]
        assert attempt["response_status"] == 200
        assert attempt["succeeded"] is True
        assert attempt["request_headers"]["webhook-signature"] == "<redacted>"
        assert delivery["webhook_id"] == pushed.headers["webhook-id"]
    assert wait_for_status(stack, account, job_id, {"succeeded"})["result"] == {"order": 17}


def test_a_failed_attempt_is_retried_by_beat_until_it_lands(stack, account, receiver):
    receiver.answer("/flaky", 500, 500, 201)
    response = api(
        stack,
        account,
        "POST",
        "/v1/jobs",
        json={"type": "echo", "input": {}, "callback_url": receiver.url("/flaky")},
    )
    job_id = response.json()["id"]

    first, second, third = receiver.wait_for(3, "/flaky", timeout=30)
    assert (
        first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    )
    assert second.at - first.at >= 0.9  # the schedule's first delay, from Postgres via beat

    def flaky(deliveries):
        return [d for d in deliveries if d["url"] == receiver.url("/flaky")]

    (delivery,) = flaky(
        wait_for_deliveries(
            stack, account, job_id, lambda ds: any(d["status"] == "succeeded" for d in flaky(ds))
        )
    )
    assert [a["response_status"] for a in delivery["attempts"]] == [500, 500, 201]


def test_a_failing_job_still_sends_job_failed(stack, account, receiver):
    response = api(
        stack,
        account,
        "POST",
        "/v1/jobs",
        json={
            "type": "fail",
            "input": {"message": "no luck"},
            "callback_url": receiver.url("/failed"),
        },
    )
    (pushed,) = receiver.wait_for(1, "/failed")
    payload = Webhook(account["signing_secret"]).verify(pushed.body, pushed.headers)
    assert payload["type"] == "job.failed"
    assert payload["data"]["id"] == response.json()["id"]
    assert payload["data"]["error"] == "RuntimeError: no luck"


def test_a_redirect_link_waits_then_returns_the_browser_signed(stack, account, receiver):
    site = receiver.url("").rstrip("/")
    api(stack, account, "PATCH", "/v1/tenant", json={"redirect_origins": [site]})
    response = api(
        stack,
        account,
        "POST",
        "/v1/jobs",
        json={
            "type": "sleep",
            "input": {"seconds": 1},
            "redirect_url": receiver.url("/done?cart=9"),
        },
    )
    assert response.status_code == 202, response.text
    link = response.json()["redirect_link"]
    waiting = requests.get(link, allow_redirects=False, timeout=5)
    assert waiting.status_code == 200
    assert 'http-equiv="refresh"' in waiting.text

    job = wait_for_status(stack, account, response.json()["id"], {"succeeded"})
    done = requests.get(link, allow_redirects=False, timeout=5)
    assert done.status_code == 303
    location = done.headers["Location"]
    assert location.startswith(receiver.url("/done?cart=9&"))
    assert f"job_id={job['id']}" in location
    assert "status=succeeded" in location
    assert "signature=" in location


def scrape(stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = requests.get(stack.base_url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series carrying ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (n, series), value in samples.items() if n == name and wanted <= set(series)
    )


def test_metrics_add_up_the_work_of_every_process_and_logs_carry_its_ids(stack, account, receiver):
    echo = api(
        stack,
        account,
        "POST",
        "/v1/jobs",
        json={"type": "echo", "input": {}, "callback_url": receiver.url("/metered")},
        headers={"X-Request-Id": "e2e-metered-1"},
    )
    assert echo.headers["X-Request-Id"] == "e2e-metered-1"
    failing = api(
        stack, account, "POST", "/v1/jobs", json={"type": "fail", "input": {"message": "metered"}}
    )
    receiver.wait_for(1, "/metered")
    wait_for_status(stack, account, failing.json()["id"], {"failed"})

    # Counted by gunicorn workers, the jobs worker's pool and the delivery worker's pool, each in
    # its own files; the web's /metrics adds them up. Wait for the worker's commit to be counted.
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(stack)
        finished = total(samples, "boomerang_jobs_finished_total", type="fail", status="failed")
        attempts = total(samples, "boomerang_delivery_attempts_total", outcome="2xx")
        if (finished >= 1 and attempts >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert total(samples, "boomerang_jobs_submitted_total", type="echo") >= 1
    assert total(samples, "boomerang_jobs_submitted_total", type="fail") >= 1
    assert total(samples, "boomerang_jobs_finished_total", type="echo", status="succeeded") >= 1
    assert finished >= 1
    assert total(samples, "boomerang_job_duration_seconds_count", type="echo") >= 1
    assert ("boomerang_deliveries_due", ()) in samples

    def json_lines(name):
        lines = []
        for line in stack.log(name).splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    assert any(
        line.get("job_id") == failing.json()["id"] and "metered" in line["message"]
        for line in json_lines("jobs")
    )
    assert any(
        line.get("request_id") == "e2e-metered-1" and line.get("path") == "/v1/jobs"
        for line in json_lines("web")
    )
    # Counted inside the delivery engine (last, so a failure here points at its wiring only).
    assert attempts >= 1
    assert total(samples, "boomerang_delivered_after_seconds_count") >= 1


def test_a_published_event_reaches_the_callbacks_subscribed_to_it(stack, account, receiver):
    registered = api(
        stack,
        account,
        "POST",
        "/v1/callbacks",
        json={"url": receiver.url("/invoices"), "event_types": ["invoice.*"]},
    )
    assert registered.status_code == 201, registered.text
    elsewhere = api(
        stack,
        account,
        "POST",
        "/v1/callbacks",
        json={"url": receiver.url("/users"), "event_types": ["user.*"]},
    )
    assert elsewhere.status_code == 201, elsewhere.text
    for name in ("invoice.paid", "invoice.voided"):
        added = api(stack, account, "POST", "/v1/event-types", json={"name": name})
        assert added.status_code == 201, added.text

    published = api(
        stack,
        account,
        "POST",
        "/v1/events:batch",
        json={
            "events": [
                {"type": "invoice.paid", "data": {"amount": 120}, "id": "inv-1-paid"},
                {"type": "invoice.voided", "data": {"amount": 120}},
            ]
        },
    )
    assert published.status_code == 202, published.text
    paid, voided = published.json()["data"]

    first, second = receiver.wait_for(2, "/invoices")
    payloads = [
        Webhook(registered.json()["secret"]).verify(r.body, r.headers) for r in (first, second)
    ]
    assert sorted(p["type"] for p in payloads) == ["invoice.paid", "invoice.voided"]
    assert {r.headers["webhook-id"] for r in (first, second)} == {
        paid["webhook_id"],
        voided["webhook_id"],
    }
    # Published again with the same id, it is the same event: nothing more is sent.
    again = api(
        stack,
        account,
        "POST",
        "/v1/events",
        json={"type": "invoice.paid", "data": {"amount": 120}, "id": "inv-1-paid"},
    )
    assert again.status_code == 200 and again.json()["id"] == paid["id"]
    time.sleep(1)
    assert len(receiver.received("/invoices")) == 2
    assert receiver.received("/users") == []


def test_events_sharing_a_key_arrive_in_order_through_retries(stack, account, receiver):
    """Each event of a key fails once before it lands; the next of that key is not sent until
    it has, while the other key goes on beside it. A key whose event is given up on goes on too,
    and the next event's body names the one given up on."""
    receiver.answer("/ordered", 503, 200, per_message=True)
    receiver.answer("/gives-up", 503, 200)
    added = api(stack, account, "POST", "/v1/event-types", json={"name": "ledger.entry"})
    assert added.status_code in (201, 409), added.text
    for path, schedule in (("/ordered", [1, 1, 1]), ("/gives-up", [])):
        registered = api(
            stack,
            account,
            "POST",
            "/v1/callbacks",
            json={
                "url": receiver.url(path),
                "event_types": ["ledger.*"],
                "retry_schedule": schedule,
            },
        )
        assert registered.status_code == 201, registered.text
    events = [
        {"type": "ledger.entry", "data": {"n": n}, "ordering_key": key}
        for n in range(3)
        for key in ("acct-1", "acct-2")
    ]
    published = api(stack, account, "POST", "/v1/events:batch", json={"events": events})
    assert published.status_code == 202, published.text

    arrived = receiver.wait_for(12, "/ordered", timeout=40)  # six events, each twice
    for key in ("acct-1", "acct-2"):
        seen = [
            (r.json()["data"]["n"], r.status) for r in arrived if r.json()["ordering_key"] == key
        ]
        # Each event: refused, then accepted; the next only after that.
        assert seen == [(0, 503), (0, 200), (1, 503), (1, 200), (2, 503), (2, 200)], seen

    gave_up = receiver.wait_for(6, "/gives-up", timeout=20)
    first_of = {}
    for request in gave_up:
        first_of.setdefault(request.json()["ordering_key"], request)
    failed_ids = {first_of[key].webhook_id for key in first_of if first_of[key].status == 503}
    said = {failed for request in gave_up for failed in request.json().get("preceding_failed", [])}
    assert failed_ids and said == failed_ids


def test_a_bulk_replay_sends_the_matching_events_again_through_the_workers(
    stack, account, receiver
):
    registered = api(
        stack,
        account,
        "POST",
        "/v1/callbacks",
        json={"url": receiver.url("/replayed"), "event_types": ["order.*"]},
    )
    assert registered.status_code == 201, registered.text
    callback_id = registered.json()["id"]
    for name in ("order.placed", "order.shipped"):
        added = api(stack, account, "POST", "/v1/event-types", json={"name": name})
        assert added.status_code == 201, added.text
    published = api(
        stack,
        account,
        "POST",
        "/v1/events:batch",
        json={"events": [{"type": f"order.{n}", "data": {"n": n}} for n in ("placed", "shipped")]},
    )
    assert published.status_code == 202, published.text
    first_round = receiver.wait_for(2, "/replayed")
    deadline = time.monotonic() + 10
    query = {"callback_id": callback_id, "status": "succeeded"}
    while api(stack, account, "GET", "/v1/deliveries", params=query).json()["data"] == []:
        assert time.monotonic() < deadline, "the first round never recorded its success"
        time.sleep(0.1)

    dry = api(
        stack, account, "POST", "/v1/deliveries/replay", json={**query, "dry_run": True}
    ).json()
    started = api(
        stack,
        account,
        "POST",
        "/v1/deliveries/replay",
        json={"callback_id": callback_id, "event_type": "order.shipped"},
        headers={"Idempotency-Key": "replay-shipped"},
    )

    assert dry["matched"] >= 1
    assert started.status_code == 202, started.text
    assert started.json()["matched"] == 1
    (again,) = receiver.wait_for(3, "/replayed")[2:]
    shipped = next(r for r in first_round if b"shipped" in r.body)
    # The same event again: the same webhook-id, so a receiver that already has it drops it.
    assert again.headers["webhook-id"] == shipped.headers["webhook-id"]
    Webhook(registered.json()["secret"]).verify(again.body, again.headers)
    progress_url = started.headers["Location"]
    deadline = time.monotonic() + 10
    while (progress := api(stack, account, "GET", progress_url).json())["status"] != "done":
        assert time.monotonic() < deadline, progress
        time.sleep(0.1)
    assert progress["replayed"] == 1
