"""A tenant's view of the stack for the stream tests: its API calls, its stream reads and the
feed read page by page."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import requests


class Client:
    def __init__(self, stack, tenant: dict[str, str]):
        self.stack = stack
        self.key = tenant["api_key"]
        self.tenant_id = tenant["tenant_id"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        return requests.request(
            method, self.stack.base_url + path, headers=headers, timeout=10, **kwargs
        )

    def stream(self, path: str, **kwargs) -> requests.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", 70)
        return requests.get(
            self.stack.stream_base_url + path, headers=headers, timeout=timeout, **kwargs
        )

    def submit(self, job_type: str = "echo", **input_) -> dict:
        response = self.api("POST", "/v1/jobs", json={"type": job_type, "input": input_})
        assert response.status_code == 202, response.text
        return response.json()

    def wait_for_status(self, job_id: str, *statuses: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.api("GET", f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never reached {statuses}")


def on_stream_port(stack, url: str) -> str:
    """A ``stream_url`` (on the public origin, the front) straight to the stream process."""
    parts = urlsplit(url)
    return f"{stack.stream_base_url}{parts.path}?{parts.query}"


def read_feed(client: Client, **params) -> dict:
    response = client.stream("/stream/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def drain_feed(client: Client, cursor: str | None) -> tuple[list[dict], str | None]:
    events: list[dict] = []
    for _ in range(50):
        page = read_feed(client, **({"after": cursor} if cursor else {}), limit=100)
        events += page["data"]
        cursor = page["next_cursor"]
        if not page["data"]:
            return events, cursor
    raise AssertionError("the feed never ran out")
