"""Fault tests: the real stack with its own Redis, and a receiver that checks every signature."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from app.receiver import Receiver
from tests.support import REPO
from tests.support.settings import database_name, worker_number
from tests.support.stack import Stack, running_stack

FIGURES_FILE = Path(os.environ.get("TEST_FAULT_FIGURES", REPO / "artifacts" / "faults.jsonl"))

# Short schedules so a fault heals in seconds: 14 retries over about 40 s.
FAULT_ENV = {
    "BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true",
    "BOOMERANG_RETRY_SCHEDULE": "1,1,1,2,2,2,3,3,3,4,4,4,5,5",
    "BOOMERANG_RETRY_JITTER": "0.1",
    "BOOMERANG_CONNECT_TIMEOUT_SECONDS": "1",
    "BOOMERANG_READ_TIMEOUT_SECONDS": "2",
    "BOOMERANG_DELIVERY_LEASE_SECONDS": "5",
    "BOOMERANG_TOTAL_TIMEOUT_SECONDS": "4",
    "BOOMERANG_JOB_LEASE_SECONDS": "5",
    "BOOMERANG_SWEEP_INTERVAL_SECONDS": "0.5",
    # Bursts of hundreds of submits (and their retries) from one tenant measure faults, not the
    # rate limit.
    "BOOMERANG_RATE_LIMIT": "100000 per minute",
}


@dataclass
class Account:
    api_key: str
    signing_secret: str
    callback_secrets: dict[str, str] = field(default_factory=dict)


class FaultStack(Stack):
    """A Stack with helpers to drive bursts through it."""

    def api(self, account: Account, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {account.api_key}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, timeout=15, **kwargs)

    def register(self, account: Account, url: str) -> None:
        response = self.api(account, "POST", "/v1/callbacks", json={"url": url})
        assert response.status_code == 201, response.text
        account.callback_secrets[url] = response.json()["secret"]

    def submit(
        self, account: Account, count: int, job_type: str = "echo", input_: dict | None = None
    ) -> list[str]:
        """Submit ``count`` jobs concurrently; their ids."""

        def one(number: int) -> str:
            for _ in range(50):
                try:
                    response = self.api(
                        account,
                        "POST",
                        "/v1/jobs",
                        json={"type": job_type, "input": input_ or {"n": number}},
                    )
                    if response.status_code == 202:
                        return response.json()["id"]
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            raise AssertionError(f"could not submit job {number}")

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))


@pytest.fixture
def fault_stack(worker_id, tmp_path):
    """The whole service on its own database and a private Redis that a test may flush or
    restart."""
    database = database_name("fault", worker_number(worker_id))
    with running_stack(database, tmp_path, FAULT_ENV, kind=FaultStack) as stack:
        yield stack


@pytest.fixture
def account(fault_stack) -> Account:
    created = fault_stack.create_tenant("faults")
    return Account(api_key=created["api_key"], signing_secret=created["signing_secret"])


@dataclass
class Tally:
    submitted: int
    attempts_seen: int
    delivered: int
    unique: int
    duplicates_with_same_id: int
    lost: int
    bad_signatures: int


def tally(receiver: Receiver, path: str, secret: str, job_ids: list[str]) -> Tally:
    """What reached ``path``: every request's signature checked; a job counts as delivered once
    the receiver accepted it (2xx); duplicates are found by webhook-id."""
    seen = receiver.received(path)
    delivered = [request for request in seen if request.accepted]
    bad = 0
    webhook_ids_by_job: dict[str, set[str]] = {}
    for request in seen:
        try:
            payload = Webhook(secret).verify(request.body, request.headers)
        except Exception:
            bad += 1
            continue
        webhook_ids_by_job.setdefault(payload["data"]["id"], set()).add(
            request.headers["webhook-id"]
        )
    # However often a job's event was sent, it always carried one webhook-id.
    assert all(len(ids) == 1 for ids in webhook_ids_by_job.values()), webhook_ids_by_job
    delivered_jobs = {request.json()["data"]["id"] for request in delivered}
    ids = Counter(request.headers["webhook-id"] for request in delivered)
    return Tally(
        submitted=len(job_ids),
        attempts_seen=len(seen),
        delivered=len(delivered),
        unique=len(ids),
        duplicates_with_same_id=sum(count - 1 for count in ids.values()),
        lost=len(set(job_ids) - delivered_jobs),
        bad_signatures=bad,
    )


def wait_until_received(
    receiver: Receiver, path: str, job_ids: list[str], timeout: float = 120
) -> float:
    """Block until the receiver accepted every job's event at ``path``; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    expected = set(job_ids)

    def accepted() -> set[str]:
        return {r.json()["data"]["id"] for r in receiver.received(path) if r.accepted}

    while time.monotonic() < deadline:
        if expected <= accepted():
            return time.monotonic() - started
        time.sleep(0.1)
    missing = expected - accepted()
    raise AssertionError(f"{len(missing)} of {len(expected)} jobs never reached {path}")


def record_figures(name: str, figures: Tally, recover_seconds: float, **extra) -> None:
    """Append one fault test's figures to the run's figures file (read for the release notes)."""
    record_row(
        {
            "test": name,
            **figures.__dict__,
            "max_recover_seconds": round(recover_seconds, 2),
            **extra,
        }
    )


def record_row(row: dict) -> None:
    """Append one row of figures (its ``test`` names it) to the figures file, and print it."""
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row))
