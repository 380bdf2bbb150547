"""``boomerang front``: one origin for the API and the stream process. Its warnings must mean
what they say: an upstream that does not answer gets one, a visitor who leaves early does not."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import requests

from tests.security.test_cookies import wait_until_answering
from tests.support.processes import free_port, start_process, stop_process

BOOMERANG = str(Path(sys.executable).parent / "boomerang")
DOWN = "did not answer"


def start_front(tmp_path: Path, upstream: str):
    port = free_port()
    command = [BOOMERANG, "front", "--port", str(port), "--web", upstream, "--stream", upstream]
    front = start_process(command, os.environ, tmp_path / "front.log")
    return front, f"http://127.0.0.1:{port}"


def test_an_upstream_that_does_not_answer_gets_a_502_and_a_warning(tmp_path):
    front, base = start_front(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens
    try:
        wait_until_answering(f"{base}/healthz", front)
        answer = requests.post(f"{base}/v1/jobs", json={}, timeout=5)
    finally:
        stop_process(front)
    assert answer.status_code == 502
    assert answer.json()["status"] == "Bad Gateway"
    assert DOWN in (tmp_path / "front.log").read_text()


def test_a_visitor_who_leaves_before_the_answer_is_no_upstream_failure(tmp_path, receiver):
    receiver.answer("/v1/slow", 200, delay_seconds=0.5)
    front, base = start_front(tmp_path, receiver.base_url)
    host, port = base.removeprefix("http://").split(":")
    try:
        wait_until_answering(f"{base}/healthz", front)
        for _ in range(3):
            # Ask, then hang up well before the answer comes.
            with socket.create_connection((host, int(port)), timeout=5) as visitor:
                visitor.sendall(b"POST /v1/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
                time.sleep(0.1)
        receiver.wait_for(3, "/v1/slow", timeout=10)
        time.sleep(1)  # the upstream's answers come back to visitors who have gone
        # The front still serves the next visitor.
        assert requests.post(f"{base}/v1/slow", json={}, timeout=5).status_code == 200
    finally:
        stop_process(front)
    assert DOWN not in (tmp_path / "front.log").read_text()
