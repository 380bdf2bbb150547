"""Streams through faults, on the real stack: a connection cut mid-job, Redis restarted
mid-stream, the stream process killed and started again, and a thousand events read from the
feed by a consumer that stops and resumes from its cursor.

This module has a stack of its own, since it restarts that stack's Redis and stream process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from app.events import webhook_id
from tests.stream.client import Client, read_feed
from tests.stream.sse import SseEvent, follow, parse_events, read_events
from tests.support.settings import database_name, worker_number
from tests.support.stack import QUICK_ENV, Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FEED_EVENTS = 1000


@pytest.fixture(scope="module")
def stack(worker_id, tmp_path_factory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("stream-faults")
    # A thousand submissions in seconds measure the feed, not the rate limit.
    env = {**QUICK_ENV, "BOOMERANG_RATE_LIMIT": "100000 per minute"}
    with running_stack(
        database_name("streamfaults", worker_number(worker_id)), log_dir, env
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def tenant(stack) -> Client:
    return Client(stack, stack.create_tenant("initech-streams"))


def everything(stack: Stack, tenant: Client, job_id: str) -> list[SseEvent]:
    """A finished job's whole stream, read afresh: the events a resumed reader must have had."""
    tenant.wait_for_status(job_id, "succeeded", "failed", timeout=60)
    job = tenant.api("GET", f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    _, events = read_events(
        f"{stack.stream_base_url}/stream/v1/jobs/{job_id}/events",
        headers={**tenant.auth, "Last-Event-ID": "none-yet"},
    )
    return events


def events_after_state(events: list[SseEvent]) -> list[str | None]:
    return [event.id for event in events if event.event != "job.state"]


def in_background(work) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    return thread, result


def test_a_connection_cut_mid_job_resumes_with_last_event_id_and_loses_nothing(stack, tenant):
    job = tenant.submit("sleep", seconds=4)
    url = job["stream_url"]
    seen: list[SseEvent] = []
    with requests.get(url, stream=True, timeout=(5, 30)) as response:
        assert response.status_code == 200
        for event in parse_events(response.iter_lines(decode_unicode=True)):
            seen.append(event)
            if event.event == "job.progress":
                break  # the connection drops here, mid-job
    assert tenant.api("GET", f"/v1/jobs/{job['id']}").json()["status"] == "running"

    resumed = follow(url, last_event_id=seen[-1].id, timeout=60)

    full = events_after_state(everything(stack, tenant, job["id"]))
    assert events_after_state(seen) + events_after_state(resumed) == full
    assert resumed[-1].event == "job.succeeded"


def test_redis_restarted_mid_stream_still_brings_the_terminal_event(stack, tenant):
    job = tenant.submit("sleep", seconds=5)
    reader, result = in_background(lambda: follow(job["stream_url"], timeout=90))
    time.sleep(1.5)

    assert stack.redis_server is not None
    stack.redis_server.restart()
    reader.join(timeout=100)

    assert result, "the reader never finished"
    events = result[0]
    assert events[-1].event == "job.succeeded"
    # From the state it first read, every later event once, whatever Redis announced or lost.
    ids = events_after_state(events)
    assert ids == events_after_state(everything(stack, tenant, job["id"]))[-len(ids) :]


def test_clients_of_a_killed_stream_process_reconnect_and_catch_up(stack, tenant):
    job = tenant.submit("sleep", seconds=6)
    # Through the public origin, as a browser reads it: the front stays, the stream dies.
    reader, result = in_background(lambda: follow(job["stream_url"], timeout=90))
    time.sleep(1.5)

    stack.stop("stream", sig=signal.SIGKILL)
    time.sleep(1)
    stack.start("stream")
    reader.join(timeout=100)

    assert result, "the reader never finished"
    events = result[0]
    assert events[-1].event == "job.succeeded"
    ids = events_after_state(events)
    assert len(set(ids)) == len(ids), "an event came twice across the reconnect"
    assert ids == events_after_state(everything(stack, tenant, job["id"]))[-len(ids) :]


def test_a_thousand_events_reach_a_feed_consumer_once_each_in_commit_order_across_a_restart(
    stack,
):
    consumer = Client(stack, stack.create_tenant("initech-feed"))

    def submit(number: int) -> str:
        return consumer.submit("echo", n=number)["id"]

    read: list[dict] = []
    cursor: str | None = None

    def read_page() -> None:
        nonlocal cursor
        page = read_feed(consumer, **({"after": cursor} if cursor else {}), limit=100, wait=5)
        read.extend(page["data"])
        cursor = page["next_cursor"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted = pool.map(submit, range(FEED_EVENTS))
        # The first consumer reads while jobs are still being submitted and finished, then
        # stops; the next resumes from the cursor it stored, as a restarted consumer would.
        deadline = time.monotonic() + 120
        while len(read) < FEED_EVENTS // 3 and time.monotonic() < deadline:
            read_page()
        job_ids = list(submitted)
    deadline = time.monotonic() + 120
    while len(read) < FEED_EVENTS and time.monotonic() < deadline:
        read_page()

    rows = stack.sql(
        "SELECT id FROM message WHERE tenant_id = :tenant ORDER BY txid, seq",
        tenant=consumer.tenant_id,
    )
    committed = [webhook_id(row.id) for row in rows]
    assert len(committed) == FEED_EVENTS
    assert [event["id"] for event in read] == committed
    assert {event["payload"]["data"]["id"] for event in read} == set(job_ids)
    assert read_feed(consumer, after=cursor)["data"] == []
