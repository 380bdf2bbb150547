"""A real HTTP receiver for tests: records every request and answers as each path is told to."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what the receiver answered

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How to answer one path. ``statuses`` are used in turn, the last one repeating; with
    ``per_message`` the turn is counted per ``webhook-id`` rather than per path. ``delays`` work
    the same way, for receivers that hang on some attempts."""

    statuses: list[int] = field(default_factory=lambda: [200])
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    delay_seconds: float = 0.0
    per_message: bool = False
    delays: list[float] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    # A real server's listen backlog (nginx 511, gunicorn 2048), not socketserver's 5: a drain
    # opens a hundred connections at once, and SYNs dropped by a full queue would only show up
    # as connect timeouts.
    request_queue_size = 512


class Receiver:
    """A ThreadingHTTPServer on a free loopback port, run in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self._calls: dict[str, int] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                behaviour, status, delay = receiver._record(self.path, dict(self.headers), body)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in behaviour.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(behaviour.body)))
                    self.end_headers()
                    self.wfile.write(behaviour.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to answer

            def log_message(self, *_args: Any) -> None:
                pass

        self.handler = Handler
        self.server = _Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _record(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[Behaviour, int, float]:
        with self._lock:
            behaviour = self.behaviours.get(path.split("?")[0], Behaviour())
            key = path
            if behaviour.per_message:
                key = f"{path} {headers.get('webhook-id') or headers.get('Webhook-Id')}"
            count = self._calls.get(key, 0)
            self._calls[key] = count + 1
            status = behaviour.statuses[min(count, len(behaviour.statuses) - 1)]
            self.requests.append(Received(path, headers, body, time.time(), status))
            self._lock.notify_all()
        delay = behaviour.delay_seconds
        if behaviour.delays:
            delay = behaviour.delays[min(count, len(behaviour.delays) - 1)]
        return behaviour, status, delay

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def answer(
        self,
        path: str,
        *statuses: int,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        delay_seconds: float = 0.0,
        per_message: bool = False,
        delays: list[float] | None = None,
    ) -> None:
        """Set how ``path`` answers from now on."""
        self.behaviours[path] = Behaviour(
            list(statuses) or [200],
            headers or {},
            body if body is not None else b'{"ok":true}',
            delay_seconds,
            per_message,
            delays or [],
        )

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path.split("?")[0] == path]

    def wait_for(
        self, count: int, path: str | None = None, timeout: float = 30.0
    ) -> list[Received]:
        """Block until ``count`` requests reached ``path``; fail the test if they never do."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self.requests if path is None or r.path.split("?")[0] == path]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} request(s) to {path}, got {len(got)}")
                self._lock.wait(remaining)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def go_down(self) -> None:
        """Stop listening: senders get connection refused until ``come_back``."""
        self.server.shutdown()
        self.server.server_close()

    def come_back(self) -> None:
        """Listen again on the same port, keeping everything recorded so far."""
        port = self.server.server_address[1]
        self.server = _Server(("127.0.0.1", port), self.handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
