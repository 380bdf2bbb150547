"""Delivery keeps no cookies: what one receiver sets is never sent back, to it or to another
tenant's callback on the same host (many tenants' webhooks go to one shared SaaS endpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.factories import make_callback, make_delivery, make_tenant
from tests.sending import deliver
from tests.support.processes import free_port, start_process, stop_process
from workers.delivery.http import OutboundClient

BOOMERANG = str(Path(sys.executable).parent / "boomerang")


def by_name(url: str) -> str:
    return url.replace("127.0.0.1", "localhost")


def test_a_cookie_a_receiver_sets_is_never_sent_back_to_anyone(
    db_session, settings, owner, receiver
):
    receiver.answer("/a", 200, headers={"Set-Cookie": "session=tenant-a-secret; Path=/"})
    other = make_tenant(db_session, "neighbour").row
    # By name: a client keeps no cookie from a bare IP address anyway.
    mine = make_callback(db_session, owner, by_name(receiver.url("/a")))
    theirs = make_callback(db_session, other, by_name(receiver.url("/b")))
    first, again, neighbours = (
        make_delivery(db_session, mine),
        make_delivery(db_session, mine),
        make_delivery(db_session, theirs),
    )
    db_session.commit()
    client = OutboundClient(settings)  # one worker process's client, as in production
    try:
        for delivery in (first, again, neighbours):
            assert deliver(db_session, client, settings, delivery.id) is True
    finally:
        client.close()
    set_by_a = receiver.received("/a")
    assert len(set_by_a) == 2
    assert all("Cookie" not in request.headers for request in set_by_a)
    (at_b,) = receiver.received("/b")
    assert "Cookie" not in at_b.headers


def test_the_front_keeps_no_cookie_from_one_visitor_for_the_next(receiver, tmp_path):
    """``boomerang front`` forwards every visitor's requests through one client: a cookie the
    upstream set for one (a portal sign-in) must reach only that visitor's browser."""
    receiver.answer("/portal/login", 200, headers={"Set-Cookie": "portal=visitor-one; Path=/"})
    port = free_port()
    upstream = by_name(receiver.base_url)
    front = start_process(
        [
            BOOMERANG,
            "front",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--web",
            upstream,
            "--stream",
            upstream,
        ],
        os.environ,
        tmp_path / "front.log",
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/_health", front)
        first = requests.post(f"http://127.0.0.1:{port}/portal/login", timeout=5)
        assert first.cookies.get("portal") == "visitor-one"  # the visitor gets it
        requests.post(f"http://127.0.0.1:{port}/portal/home", timeout=5)  # someone else
        # The visitor's own cookie still goes through.
        requests.post(f"http://127.0.0.1:{port}/portal/me", cookies=first.cookies, timeout=5)
    finally:
        stop_process(front)
    (later,) = receiver.received("/portal/home")
    assert "Cookie" not in later.headers
    (own,) = receiver.received("/portal/me")
    assert own.headers["Cookie"] == "portal=visitor-one"


def wait_until_answering(url: str, process: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the front exited"
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {seconds} s")
