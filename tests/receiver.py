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

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How to answer one path. ``statuses`` are used in turn, the last one repeating."""

    statuses: list[int] = field(default_factory=lambda: [200])
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    delay_seconds: float = 0.0


class Receiver:
    """A ThreadingHTTPServer on a free loopback port, run in a thread."""

    def __init__(self) -> None:
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
                behaviour, status = receiver._record(self.path, dict(self.headers), body)
                if behaviour.delay_seconds:
                    time.sleep(behaviour.delay_seconds)
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Behaviour, int]:
        with self._lock:
            self.requests.append(Received(path, headers, body, time.time()))
            behaviour = self.behaviours.get(path.split("?")[0], Behaviour())
            count = self._calls.get(path, 0)
            self._calls[path] = count + 1
            self._lock.notify_all()
        return behaviour, behaviour.statuses[min(count, len(behaviour.statuses) - 1)]

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
    ) -> None:
        """Set how ``path`` answers from now on."""
        self.behaviours[path] = Behaviour(
            list(statuses) or [200],
            headers or {},
            body if body is not None else b'{"ok":true}',
            delay_seconds,
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
