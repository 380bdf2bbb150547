"""A client that stops reading is dropped once a write has waited WRITE_TIMEOUT_SECONDS, and the
stream process stays healthy for everyone else."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import requests

from app.stream import server
from tests.stream.sse import read_events

pytestmark = pytest.mark.timeout(60)


class NeverDrains:
    """A response whose transport buffer is full: every write waits forever."""

    task = object()

    def __init__(self) -> None:
        self.closed = False

    async def write(self, _data: bytes) -> None:
        await asyncio.Event().wait()

    def force_close(self) -> None:
        self.closed = True


def test_a_write_that_cannot_drain_gives_up_and_closes_the_connection(monkeypatch):
    monkeypatch.setattr(server, "WRITE_TIMEOUT_SECONDS", 0.2)
    response = NeverDrains()
    writer = server.SseWriter(response)  # type: ignore[arg-type]

    started = time.monotonic()
    sent = asyncio.run(writer.send("msg_1", "job.progress", "{}"))

    assert sent is False
    assert response.closed is True
    assert time.monotonic() - started < 2


@pytest.mark.e2e
def test_idle_and_never_reading_clients_do_not_stop_a_reading_one(stack, tmp_path):
    tenant = stack.create_tenant("idle-readers")
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    job = requests.post(
        f"{stack.base_url}/v1/jobs",
        json={"type": "sleep", "input": {"seconds": 2}},
        headers=auth,
        timeout=10,
    ).json()
    path = f"/stream/v1/jobs/{job['id']}/events"
    stalled = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", stack.stream_port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n"
        request += "\r\n"
        sock.sendall(request.encode())
        stalled.append(sock)  # and never read from
    try:
        response, events = read_events(stack.stream_base_url + path, headers=auth, timeout=30)
        assert response.status_code == 200
        assert events[-1].event == "job.succeeded"
        health = requests.get(f"{stack.stream_base_url}/stream/healthz", timeout=5)
        assert health.status_code == 200
    finally:
        for sock in stalled:
            sock.close()
