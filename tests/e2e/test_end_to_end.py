"""The real service end to end: gunicorn, Celery workers on Redis, beat, Postgres, a receiver."""

from __future__ import annotations

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
    api(stack, account, "POST", "/v1/callbacks", json={"url": receiver.url("/site-hook")})
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
