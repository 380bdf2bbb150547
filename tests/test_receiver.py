"""The receiver the tests, the benchmark and ``boomerang receiver`` share: it answers each path as
told, records what arrived, and serves in a thread or as a process of its own."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app.receiver import Received, Receiver, busiest_second, peak_in_flight
from tests.support.processes import free_port


def post(
    receiver: Receiver, path: str, webhook_id: str = "msg_1", timeout: float = 5
) -> requests.Response:
    return requests.post(
        receiver.url(path), data=b"{}", headers={"webhook-id": webhook_id}, timeout=timeout
    )


def test_it_answers_the_statuses_in_turn_and_repeats_the_last(receiver):
    receiver.answer("/flaky", 500, 503, 201)

    statuses = [post(receiver, "/flaky").status_code for _ in range(5)]

    assert statuses == [500, 503, 201, 201, 201]
    assert [r.status for r in receiver.received("/flaky")] == statuses
    assert [r.accepted for r in receiver.received("/flaky")] == [False, False, True, True, True]


def test_per_message_turns_are_counted_for_each_webhook_id(receiver):
    receiver.answer("/retry", 500, 200, per_message=True)

    first = [post(receiver, "/retry", "msg_a").status_code for _ in range(2)]
    second = [post(receiver, "/retry", "msg_b").status_code for _ in range(2)]

    assert first == second == [500, 200]


def test_an_unconfigured_path_answers_200_with_a_small_json_body(receiver):
    response = post(receiver, "/anything")

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["Content-Type"] == "application/json"


def test_it_sends_the_headers_and_body_it_was_given(receiver):
    receiver.answer("/custom", 202, headers={"X-Trace": "abc"}, body=b"plain words")

    response = post(receiver, "/custom")

    assert (response.status_code, response.headers["X-Trace"]) == (202, "abc")
    assert response.content == b"plain words"


def test_a_folder_behaviour_covers_every_path_under_it_unless_one_is_set(receiver):
    receiver.answer("/slow/", 201, delay_seconds=0.3)
    receiver.answer("/slow/exact", 418)

    started = time.monotonic()
    assert post(receiver, "/slow/anything").status_code == 201
    assert time.monotonic() - started >= 0.3
    assert post(receiver, "/slow/exact").status_code == 418
    assert post(receiver, "/slowly").status_code == 200


def test_delays_are_used_in_turn_so_only_the_first_attempt_hangs(receiver):
    receiver.answer("/hangs", 200, delays=[2.0, 0.0])

    with pytest.raises(requests.Timeout):
        post(receiver, "/hangs", timeout=0.3)
    assert post(receiver, "/hangs", timeout=1).status_code == 200


def test_it_records_the_path_with_its_query_and_finds_it_without(receiver):
    post(receiver, "/hook?attempt=1")

    (request,) = receiver.received("/hook")
    assert request.path == "/hook?attempt=1"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.json() == {}
    assert receiver.received("/other") == []


def test_waiting_for_requests_that_never_come_fails_naming_the_path(receiver):
    with pytest.raises(AssertionError, match="expected 1 request"):
        receiver.wait_for(1, "/never", timeout=0.2)


def test_a_receiver_that_went_down_refuses_connections_and_keeps_its_records(receiver):
    post(receiver, "/hook")

    receiver.go_down()
    with pytest.raises(requests.ConnectionError):
        post(receiver, "/hook")
    receiver.come_back()

    assert post(receiver, "/hook").status_code == 200
    assert len(receiver.received("/hook")) == 2


def test_a_header_no_http_library_would_send_still_goes_out_byte_for_byte(receiver):
    receiver.answer("/odd", 200, headers={"X-Odd": "a\x00b"})

    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(b"POST /odd HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nX-Odd: a\x00b\r\n" in answer
    assert answer.endswith(b'\r\n\r\n{"ok":true}')


def test_the_control_api_counts_requests_and_distinct_webhook_ids(receiver):
    for webhook_id in ("msg_a", "msg_a", "msg_b"):
        post(receiver, "/fast/x", webhook_id)

    stats = requests.get(receiver.url("/_stats"), params={"path": "/fast/x"}, timeout=5).json()
    records = requests.get(receiver.url("/_records"), params={"path": "/fast/x"}, timeout=5)

    assert stats == {"count": 3, "unique": 2}
    assert [wid for wid, _ in records.json()["records"]] == ["msg_a", "msg_a", "msg_b"]
    assert requests.get(receiver.url("/_health"), timeout=5).json() == {"ok": True}


def test_as_a_process_of_its_own_it_answers_with_the_status_and_folder_delays_it_was_given():
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.receiver",
            "--port",
            str(port),
            "--status",
            "201",
            "--delay",
            "/slow/=0.3",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"listening on http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}"
        fast = requests.post(url + "/fast/a", data=b"{}", timeout=5)
        started = time.monotonic()
        slow = requests.post(url + "/slow/a", data=b"{}", timeout=5)
        waited = time.monotonic() - started
        stats = requests.get(url + "/_stats", params={"path": "/slow/a"}, timeout=5).json()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)

    assert (fast.status_code, fast.content) == (201, b"")
    assert slow.status_code == 201 and waited >= 0.3
    assert stats == {"count": 1, "unique": 1}
    assert output == ""  # --quiet: nothing printed per request
    assert process.returncode == 0


def held(at: float, answered_at: float) -> Received:
    return Received("/limits", {}, b"", at, 200, answered_at)


def test_peak_in_flight_counts_overlaps_and_an_answer_frees_its_place_for_the_next():
    requests_ = [held(0.0, 1.0), held(0.5, 1.5), held(1.0, 2.0), held(1.2, 1.3)]

    assert peak_in_flight(requests_) == 3
    assert peak_in_flight(requests_, since=1.4) == 2
    assert peak_in_flight(requests_, until=0.4) == 1
    # One still held (never answered) counts until the end.
    assert peak_in_flight([held(0.0, 0.0), held(5.0, 6.0)]) == 2


def test_busiest_second_is_the_most_arrivals_in_any_one_second_window():
    arrivals = [held(at, at) for at in (0.0, 0.2, 0.9, 1.0, 1.1, 3.0)]

    assert busiest_second(arrivals) == 4
    assert busiest_second([]) == 0


def test_the_receiver_records_when_it_answered_so_concurrency_can_be_measured(receiver):
    # Held long enough that all four overlap even when a busy host starts a thread late.
    receiver.answer("/slow", 200, delay_seconds=2)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: post(receiver, "/slow", f"msg_{n}"), range(4)))

    seen = receiver.received("/slow")
    assert all(r.answered_at - r.at >= 1.99 for r in seen)
    assert peak_in_flight(seen) == 4


# Run as its own process: only a process's main thread may wait for Ctrl-C.
_CTRL_C_ON_THE_SERVERS_THREAD = """
import signal, sys, threading, time
import requests
from app.receiver import Receiver

receiver = Receiver(int(sys.argv[1]))

def interrupt_the_server_thread():
    while True:
        try:
            requests.get(receiver.url("/_health"), timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    (server,) = [t for t in threading.enumerate() if t.name == "receiver"]
    signal.pthread_kill(server.ident, signal.SIGINT)

threading.Thread(target=interrupt_the_server_thread, daemon=True).start()
receiver.run()
print("stopped", flush=True)
"""


def test_a_ctrl_c_the_kernel_hands_to_the_servers_thread_still_stops_it():
    """A signal sent to a process may be handed to any of its threads; Python then runs the
    handler on the main thread, but only once that thread wakes."""
    stopped = subprocess.run(
        [sys.executable, "-c", _CTRL_C_ON_THE_SERVERS_THREAD, str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert stopped.stdout == "stopped\n", stopped.stderr


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _block_ctrl_c() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@pytest.mark.parametrize("inherited", [_ignore_ctrl_c, _block_ctrl_c], ids=["ignored", "blocked"])
def test_the_cli_receiver_stops_on_ctrl_c_whatever_its_parent_did_with_it(inherited):
    """A job a script starts in the background inherits Ctrl-C ignored; a parent may block it."""
    port = free_port()
    receiver = subprocess.Popen(
        [str(Path(sys.executable).parent / "boomerang"), "receiver", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=inherited,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().startswith("listening on")
        receiver.send_signal(signal.SIGINT)
        receiver.communicate(timeout=10)
    finally:
        receiver.kill()
    assert receiver.returncode == 0
