"""Web clients without polling, on the real stack: a job's Server-Sent Events stream (state,
progress, result; resumed with Last-Event-ID), the long poll, the tenant feed, the tokens that
guard them and the CORS origins that let a page read them."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.stream.client import Client, drain_feed, on_stream_port, read_feed
from tests.stream.sse import read_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def acme(stack) -> Client:
    return Client(stack, stack.create_tenant("acme-streams"))


@pytest.fixture(scope="module")
def globex(stack) -> Client:
    return Client(stack, stack.create_tenant("globex-streams"))


# The job's event stream ------------------------------------------------------------------------


def test_a_stream_url_shows_the_state_then_each_progress_step_then_the_result(stack, acme):
    job = acme.submit("sleep", seconds=3)
    assert job["stream_url"].startswith(
        f"{stack.front_url}/stream/v1/jobs/{job['id']}/events?token="
    )

    response, events = read_events(on_stream_port(stack, job["stream_url"]))

    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert events[0].event == "job.state"
    assert events[0].payload["data"]["id"] == job["id"]
    kinds = [event.event for event in events[1:]]
    assert kinds[-1] == "job.succeeded", kinds
    # Each step the job reported, in order (the first may already be in the state).
    progress = [e.payload["data"]["progress"]["percent"] for e in events[1:-1]]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    assert len(progress) >= 2
    # The bodies are the callbacks' envelope, and the ids their webhook-ids.
    final = events[-1].payload
    assert final["type"] == "job.succeeded" and final["data"]["result"] == {"slept_seconds": 3.0}
    assert all(event.id and event.id.startswith("msg_") for event in events[1:])
    assert len({event.id for event in events[1:]}) == len(events) - 1


def test_last_event_id_resumes_after_that_event_without_loss(stack, acme):
    job = acme.submit("sleep", seconds=2)
    _, first = read_events(on_stream_port(stack, job["stream_url"]))
    acme.wait_for_status(job["id"], "succeeded")
    _, everything = read_events(
        on_stream_port(stack, job["stream_url"]), headers={"Last-Event-ID": "none-yet"}
    )
    assert [e.event for e in everything][-1] == "job.succeeded"
    resume_from = everything[0]

    _, resumed = read_events(
        on_stream_port(stack, job["stream_url"]), headers={"Last-Event-ID": resume_from.id}
    )

    assert [e.id for e in resumed] == [e.id for e in everything[1:]]
    assert first[-1].id == everything[-1].id  # the live stream ended on the same event


def test_a_stream_resumed_after_the_terminal_event_closes_at_once(stack, acme):
    job = acme.submit("echo", n=3)
    acme.wait_for_status(job["id"], "succeeded")
    _, everything = read_events(on_stream_port(stack, job["stream_url"]), timeout=10)

    started = time.monotonic()
    response, resumed = read_events(
        on_stream_port(stack, job["stream_url"]),
        headers={"Last-Event-ID": everything[-1].id},
        timeout=10,
    )

    assert response.status_code == 200
    assert resumed == []
    assert time.monotonic() - started < 5  # closed, not held open on heartbeats


def test_a_stream_of_a_finished_job_sends_its_state_and_result_then_closes(stack, acme):
    job = acme.submit("echo", n=1)
    acme.wait_for_status(job["id"], "succeeded")

    _, events = read_events(on_stream_port(stack, job["stream_url"]), timeout=10)

    assert [e.event for e in events] == ["job.state", "job.succeeded"]
    assert events[0].payload["data"]["status"] == "succeeded"
    assert events[0].id == events[1].id  # resuming from the state skips nothing


def test_the_owner_may_stream_with_its_api_key_instead_of_a_token(acme):
    job = acme.submit("echo", n=2)

    response, events = read_events(
        f"{acme.stack.stream_base_url}/stream/v1/jobs/{job['id']}/events",
        headers=acme.auth,
        timeout=20,
    )

    assert response.status_code == 200
    assert events[-1].event == "job.succeeded"


# Tokens ----------------------------------------------------------------------------------------


def token_of(stream_url: str) -> str:
    return parse_qs(urlsplit(stream_url).query)["token"][0]


def test_a_forged_or_foreign_token_gets_401_and_no_events(stack, acme):
    mine, other = acme.submit("echo"), acme.submit("echo")
    base = f"{stack.stream_base_url}/stream/v1/jobs/{mine['id']}/events"
    forged = token_of(mine["stream_url"])[:-2] + "xx"

    for token in (forged, token_of(other["stream_url"]), "", "not-a-token"):
        response = requests.get(f"{base}?token={token}", timeout=5)
        assert response.status_code == 401, token
        assert response.headers["Content-Type"].startswith("application/json")
        assert "message" in response.json()


class TwoHoursAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 7200


def test_an_expired_token_gets_401(stack, acme):
    job = acme.submit("echo")
    (key,) = stack.sql("SELECT value FROM server_secret WHERE name = 'stream_token_key'")[0]
    # A token made two hours ago, past BOOMERANG_STREAM_TOKEN_SECONDS (one hour).
    serializer = URLSafeTimedSerializer(key, salt="boomerang.stream-token", signer=TwoHoursAgo)
    expired = serializer.dumps(uuid.UUID(job["id"]).hex)
    assert serializer.loads(expired, max_age=10_000)  # well made, only old

    url = f"{stack.stream_base_url}/stream/v1/jobs/{job['id']}/events?token={expired}"
    assert requests.get(url, timeout=5).status_code == 401


def test_another_tenants_key_sees_no_job(acme, globex):
    job = acme.submit("echo")

    assert globex.stream(f"/stream/v1/jobs/{job['id']}/events").status_code == 404
    assert globex.stream(f"/stream/v1/jobs/{job['id']}").status_code == 404
    assert globex.stream(f"/stream/v1/jobs/{uuid.uuid4()}").status_code == 404


# The long poll ---------------------------------------------------------------------------------


def test_the_long_poll_answers_when_the_job_changes_and_304_when_it_did_not(acme):
    job = acme.submit("sleep", seconds=3)
    first = acme.stream(f"/stream/v1/jobs/{job['id']}")
    assert first.status_code == 200
    etag = first.headers["ETag"]

    started = time.monotonic()
    changed = acme.stream(f"/stream/v1/jobs/{job['id']}?wait=30", headers={"If-None-Match": etag})
    took = time.monotonic() - started

    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.json() != first.json()
    # The next change (a worker taking the job, or its next step, seconds away on a loaded host),
    # not the whole wait of 30 s.
    assert took < 15

    done = acme.wait_for_status(job["id"], "succeeded")
    final = acme.stream(f"/stream/v1/jobs/{job['id']}")
    assert final.json() == done
    started = time.monotonic()
    unchanged = acme.stream(
        f"/stream/v1/jobs/{job['id']}?wait=1", headers={"If-None-Match": final.headers["ETag"]}
    )
    assert unchanged.status_code == 304
    assert 0.9 <= time.monotonic() - started < 4


def test_wait_on_the_api_is_sent_to_the_stream_process_and_capped_at_60(acme):
    job = acme.submit("echo")

    moved = acme.api("GET", f"/v1/jobs/{job['id']}?wait=5", allow_redirects=False)
    assert moved.status_code == 307
    assert moved.headers["Location"] == f"/stream/v1/jobs/{job['id']}?wait=5"

    for response in (
        acme.api("GET", f"/v1/jobs/{job['id']}?wait=61"),
        acme.stream(f"/stream/v1/jobs/{job['id']}?wait=61"),
        acme.stream("/stream/v1/events?wait=61"),
    ):
        assert response.status_code == 422, response.text
        assert "wait" in json.dumps(response.json()["errors"])


# CORS ------------------------------------------------------------------------------------------


def test_only_the_tenants_listed_origins_get_cors_headers(stack, acme):
    listed = "https://app.acme.test"
    response = acme.api("PATCH", "/v1/tenant", json={"cors_origins": [listed]})
    assert response.status_code == 200 and response.json()["cors_origins"] == [listed]
    job = acme.submit("echo")
    url = on_stream_port(stack, job["stream_url"])
    poll = url.replace("/events?", "?")

    allowed = requests.get(poll, headers={"Origin": listed}, timeout=5)
    assert allowed.headers["Access-Control-Allow-Origin"] == listed
    other = requests.get(poll, headers={"Origin": "https://evil.test"}, timeout=5)
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers

    preflight = requests.options(
        poll,
        headers={
            "Origin": listed,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match",
        },
        timeout=5,
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == listed
    assert "If-None-Match" in preflight.headers["Access-Control-Allow-Headers"]
    refused = requests.options(poll, headers={"Origin": "https://evil.test"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in refused.headers


# The tenant feed -------------------------------------------------------------------------------


def test_the_feed_has_every_event_once_in_order_and_the_cursor_acknowledges(globex):
    _, cursor = drain_feed(globex, None)
    jobs = [globex.submit("echo", n=n) for n in range(5)]
    for job in jobs:
        globex.wait_for_status(job["id"], "succeeded")

    # The feed shows an event once every transaction older than the one that wrote it has
    # ended, anywhere on that Postgres (other test processes' open transactions too), so a job
    # reads as succeeded a moment before its event is in the feed.
    events: list[dict] = []
    deadline = time.monotonic() + 15
    while len([e for e in events if e["type"] == "job.succeeded"]) < len(jobs):
        assert time.monotonic() < deadline, "the feed never showed every job's end"
        page = read_feed(globex, after=cursor, wait=5)
        events += page["data"]
        cursor = page["next_cursor"] or cursor
    more, cursor = drain_feed(globex, cursor)
    events += more

    finished = [e["payload"]["data"]["id"] for e in events if e["type"] == "job.succeeded"]
    # Two job processes finish them in their own order; the feed has each end exactly once.
    assert sorted(finished) == sorted(job["id"] for job in jobs)
    assert len({e["id"] for e in events}) == len(events)
    # Acknowledged: the same cursor gives nothing more.
    assert read_feed(globex, after=cursor)["data"] == []
    only = read_feed(globex, types="job.failed")["data"]
    assert all(e["type"] == "job.failed" for e in only)


def test_a_feed_wait_answers_as_soon_as_an_event_commits(globex):
    _, cursor = drain_feed(globex, None)
    submitted: list[dict] = []
    timer = threading.Timer(1.0, lambda: submitted.append(globex.submit("echo", late=True)))
    timer.start()
    started = time.monotonic()
    try:
        page = read_feed(globex, after=cursor, wait=30)
    finally:
        timer.join()

    took = time.monotonic() - started
    assert page["data"], "the wait ran out with nothing"
    assert page["data"][0]["payload"]["data"]["id"] == submitted[0]["id"]
    assert 0.9 <= took < 10


def test_a_bad_cursor_is_422_and_one_past_the_retention_is_410(globex):
    bad = globex.stream("/stream/v1/events", params={"after": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 422
    assert "after" in bad.json()["errors"]["query"]

    long_ago = int(time.time()) - 400 * 86400
    old = base64.urlsafe_b64encode(f"1.1.{long_ago}".encode()).decode().rstrip("=")
    gone = globex.stream("/stream/v1/events", params={"after": old})
    assert gone.status_code == 410
    assert "retention" in gone.json()["message"]


def test_the_feed_needs_an_api_key(stack):
    assert requests.get(f"{stack.stream_base_url}/stream/v1/events", timeout=5).status_code == 401


# One origin -------------------------------------------------------------------------------------


def test_the_public_origin_serves_the_api_and_the_streams_and_the_long_poll_redirect(stack, acme):
    """Through ``boomerang front``, as ``boomerang up`` runs it: the stream_url works as given,
    and ``?wait=`` on the API follows its 307 to the stream process with the same key."""
    job = acme.submit("sleep", seconds=2)

    _, events = read_events(job["stream_url"])
    assert [e.event for e in events][-1] == "job.succeeded"

    done = requests.get(
        f"{stack.front_url}/v1/jobs/{job['id']}?wait=5", headers=acme.auth, timeout=10
    )
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert done.history and done.history[0].status_code == 307
    assert "ETag" in done.headers
    assert requests.get(f"{stack.front_url}/healthz", timeout=5).status_code == 200
