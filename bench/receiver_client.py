"""Reads what the receiver process (``python -m app.receiver``) recorded, through its control
API."""

from __future__ import annotations

import time

import requests


class ReceiverClient:
    """The receiver on ``port``: its URLs, and what reached each path."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.session = requests.Session()

    def url(self, path: str) -> str:
        """The URL of ``path`` on the receiver."""
        return self.base_url + path

    def stats(self, path: str) -> dict[str, int]:
        """Requests (``count``) and distinct webhook-ids (``unique``) that reached ``path``."""
        return self.session.get(self.url("/_stats"), params={"path": path}, timeout=10).json()

    def records(self, path: str) -> list[tuple[str, float]]:
        """Each request to ``path``: its webhook-id and arrival time."""
        answer = self.session.get(self.url("/_records"), params={"path": path}, timeout=60)
        return [(wid, at) for wid, at in answer.json()["records"]]

    def wait_unique(self, path: str, expected: int, timeout: float) -> bool:
        """Block until ``expected`` distinct webhook-ids reached ``path``; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats(path)["unique"] >= expected:
                return True
            time.sleep(0.1)
        return self.stats(path)["unique"] >= expected
