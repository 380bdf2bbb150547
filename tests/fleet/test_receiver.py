"""The fleet receiver's contract, which other tests read: what it records and counts, and how it
answers when told to. It runs on loopback here, with no namespace (no root needed)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.fleet_receiver import FleetReceiver
from tests.support.processes import free_port


@pytest.fixture(scope="module")
def running_receiver(tmp_path_factory) -> Iterator[FleetReceiver]:
    receiver = FleetReceiver("127.0.0.1", free_port(), tmp_path_factory.mktemp("receiver"))
    receiver.start([])
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def receiver(running_receiver) -> FleetReceiver:
    running_receiver.reset()
    return running_receiver


def post(receiver: FleetReceiver, path: str, webhook_id: str, job_id: str = "job") -> int:
    body = json.dumps({"type": "job.succeeded", "data": {"id": job_id}})
    headers = {"webhook-id": webhook_id, "content-type": "application/json"}
    return requests.post(receiver.url(path), data=body, headers=headers, timeout=10).status_code


def test_it_counts_the_peak_in_flight_and_the_busiest_second(receiver):
    receiver.behave("/slow", delay_seconds=0.5)
    with ThreadPoolExecutor(5) as pool:
        statuses = list(pool.map(lambda n: post(receiver, "/slow", f"msg_{n}"), range(5)))

    stats = receiver.stats("/slow")
    assert statuses == [200] * 5
    assert stats["count"] == stats["accepted"] == stats["unique"] == 5
    assert stats["duplicates"] == 0
    assert stats["peak_in_flight"] == 5
    assert stats["in_flight"] == 0
    assert stats["busiest_second"] == 5
    assert sum(stats["per_second"].values()) == 5
    assert stats["by_host"] == {"127.0.0.1": 5}


def test_it_records_each_request_with_its_sender_job_and_answer(receiver):
    post(receiver, "/a", "msg_1", job_id="j1")
    post(receiver, "/a", "msg_1", job_id="j1")

    records = receiver.records("/a")
    assert [(r["webhook_id"], r["job_id"], r["host"], r["status"]) for r in records] == [
        ("msg_1", "j1", "127.0.0.1", 200)
    ] * 2
    assert all(r["answered_at"] >= r["at"] for r in records)
    assert receiver.stats("/a")["duplicates"] == 1
    assert receiver.records("/elsewhere") == []


def test_it_fails_each_messages_first_tries_when_told(receiver):
    receiver.behave("/flaky/", fail_first=1)

    assert post(receiver, "/flaky/x", "msg_1") == 500
    assert post(receiver, "/flaky/x", "msg_2") == 500
    assert post(receiver, "/flaky/x", "msg_1") == 200


def test_it_answers_a_status_for_a_while_then_200(receiver):
    receiver.behave("/down", status=503, status_seconds=0.5)

    assert post(receiver, "/down", "msg_1") == 503
    time.sleep(0.6)
    assert post(receiver, "/down", "msg_1") == 200


def test_a_reset_forgets_records_and_behaviours(receiver):
    receiver.behave("/down", status=503)
    post(receiver, "/down", "msg_1")

    receiver.reset()

    assert receiver.stats()["count"] == 0
    assert post(receiver, "/down", "msg_1") == 200
