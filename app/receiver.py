"""A real HTTP receiver: records every request and answers as each path is told to.

It serves three users. The tests run it on a thread of their own process and tell each path how
to answer. The benchmark runs it as a process of its own and reads what arrived from its control
API. ``boomerang receiver`` runs it to print and verify what a local Boomerang sends.

    python -m app.receiver --port 9000 [--status 200] [--secret whsec_...]
                           [--delay /slow/=0.5] [--backlog 512] [--quiet]

The control API answers GETs on the same port: ``/_health``; ``/_stats?path=P``, the requests and
distinct webhook-ids that reached P; ``/_records?path=P``, every ``[webhook_id, arrival_time]``.

Within app/, only ``app.cli`` imports it, and lazily: no process of the service loads it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

# A real server's listen backlog (nginx 511), not a toy server's 5: a drain opens a hundred
# connections at once, and SYNs dropped by a full queue would only show up as connect timeouts.
LISTEN_BACKLOG = 512
# Above anything Boomerang sends (BOOMERANG_MAX_PAYLOAD_BYTES is 1 MiB by default).
MAX_BODY_BYTES = 4 * 1024 * 1024
OK_BODY = b'{"ok":true}'
# Long enough that a benchmark's keep-alive connections are never dropped between bursts.
KEEPALIVE_SECONDS = 120.0


@dataclass(slots=True)
class Received:
    """One request as it arrived, and the status it was answered with."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0
    # When the answer was handed back; 0 while the receiver still holds the request.
    answered_at: float = 0.0

    @property
    def accepted(self) -> bool:
        """Whether the receiver answered 2xx."""
        return 200 <= self.status < 300

    @property
    def webhook_id(self) -> str:
        """The ``webhook-id`` header, whatever its case; empty when there is none."""
        return self.headers.get("webhook-id") or self.headers.get("Webhook-Id") or ""

    def json(self) -> Any:
        """The body, parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How to answer a path. ``statuses`` are used in turn, the last one repeating; with
    ``per_message`` the turn is counted per ``webhook-id`` rather than per path. ``delays`` work
    the same way, for receivers that hang on some attempts."""

    statuses: list[int] = field(default_factory=lambda: [200])
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = OK_BODY
    delay_seconds: float = 0.0
    per_message: bool = False
    delays: list[float] = field(default_factory=list)

    def status(self, turn: int) -> int:
        """The status to answer on this turn (0 for the first request)."""
        return self.statuses[min(turn, len(self.statuses) - 1)]

    def delay(self, turn: int) -> float:
        """How long to wait before answering on this turn."""
        if self.delays:
            return self.delays[min(turn, len(self.delays) - 1)]
        return self.delay_seconds


class Receiver:
    """An aiohttp server on a loopback port: ``start`` serves it from a thread of its own,
    ``run`` in the foreground. ``behaviours`` maps a path to how it answers; a key ending in
    ``/`` covers every path under it."""

    def __init__(
        self,
        port: int = 0,
        *,
        default: Behaviour | None = None,
        backlog: int = LISTEN_BACKLOG,
        on_receive: Callable[[Received], None] | None = None,
    ) -> None:
        self.requests: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.default = default or Behaviour()
        self.backlog = backlog
        self.on_receive = on_receive
        self._by_path: dict[str, list[Received]] = {}
        self._ids_by_path: dict[str, set[str]] = {}
        self._turns: dict[str, int] = {}
        self._lock = threading.Condition()
        # Bound now, so the URL is known (and the port taken) before the server starts.
        self._socket = _listening_socket(port, backlog)
        self.port: int = self._socket.getsockname()[1]
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started: Future[None] | None = None

    # -- what the tests use ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this receiver."""
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
            body if body is not None else OK_BODY,
            delay_seconds,
            per_message,
            delays or [],
        )

    def behaviour_for(self, path: str) -> Behaviour:
        """The behaviour set for ``path``, else for the deepest folder holding it, else the
        default."""
        if path in self.behaviours:
            return self.behaviours[path]
        folders = [key for key in self.behaviours if key.endswith("/") and path.startswith(key)]
        return self.behaviours[max(folders, key=len)] if folders else self.default

    def received(self, path: str | None = None) -> list[Received]:
        """Every request so far, or those to ``path`` (its query string aside)."""
        with self._lock:
            return list(self.requests if path is None else self._by_path.get(path, ()))

    def wait_for(
        self, count: int, path: str | None = None, timeout: float = 30.0
    ) -> list[Received]:
        """Block until ``count`` requests reached ``path``; fail the test if they never do."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = self.requests if path is None else self._by_path.get(path, [])
                if len(got) >= count:
                    return list(got)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} request(s) to {path}, got {len(got)}")
                self._lock.wait(remaining)

    # -- running ---------------------------------------------------------------------------------

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> Receiver:
        """Serve from a background thread, on an event loop of its own, until ``stop``."""
        started: Future[None] = Future()
        self._started = started
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(started),), name="receiver", daemon=True
        )
        self._thread.start()
        started.result(timeout=10)
        return self

    def stop(self) -> None:
        """Close every connection and end the background thread."""
        if self._started is not None:
            # Stopped while still starting (a Ctrl-C right away): let it finish starting first,
            # or there is no loop yet to tell and the thread would serve on.
            with contextlib.suppress(Exception):
                self._started.result(timeout=10)
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._socket.close()

    def go_down(self) -> None:
        """Stop listening and drop every connection: senders get connection refused until
        ``come_back``."""
        self._in_loop(self._close())

    def come_back(self) -> None:
        """Listen again on the same port, keeping everything recorded so far."""
        self._socket = _listening_socket(self.port, self.backlog)
        self._in_loop(self._open())

    def run(self, serving: Callable[[], None] = lambda: None) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM; ``serving`` is called once requests
        are being answered."""

        def interrupt(_signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt

        # Whatever it inherited: a parent may have ignored or blocked Ctrl-C (a job started in
        # the background of a script ignores it), and then this would never stop.
        stops = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        for signum in stops:
            signal.signal(signum, interrupt)
        try:
            # Starting is inside: a Ctrl-C that lands while the server starts still stops it.
            with contextlib.suppress(KeyboardInterrupt):
                self.start()
                serving()
                while True:
                    # Not signal.pause(): a signal that lands just before it, or on the server's
                    # thread, would leave it waiting for another. Python runs the handler (and
                    # so raises KeyboardInterrupt) the next time this thread wakes.
                    time.sleep(0.5)
        finally:
            self.stop()

    def _in_loop(self, step: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "the receiver is not running"
        asyncio.run_coroutine_threadsafe(step, self._loop).result(timeout=10)

    async def _serve(self, started: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self._open()
        except BaseException as exc:
            started.set_exception(exc)
            raise
        started.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await self._close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/_health", self._health)
        app.router.add_get("/_stats", self._stats)
        app.router.add_get("/_records", self._records)
        app.router.add_post("/{tail:.*}", self._hook)
        # Stopping cuts off requests still waiting on a delay, as a server that goes away would.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0, keepalive_timeout=KEEPALIVE_SECONDS
        )
        await runner.setup()
        await web.SockSite(runner, self._socket, backlog=self.backlog).start()
        self._runner = runner

    async def _close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- handlers --------------------------------------------------------------------------------

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        body = await request.read()
        headers = {str(name): value for name, value in request.headers.items()}
        received = Received(request.raw_path, headers, body, arrived)
        behaviour, delay = self._record(received)
        if self.on_receive is not None:
            self.on_receive(received)
        if delay:
            await asyncio.sleep(delay)
        received.answered_at = time.time()
        return _respond(request, received.status, behaviour)

    def _record(self, received: Received) -> tuple[Behaviour, float]:
        path = received.path.split("?")[0]
        with self._lock:
            behaviour = self.behaviour_for(path)
            key = received.path
            if behaviour.per_message:
                key = f"{received.path} {received.webhook_id}"
            turn = self._turns.get(key, 0)
            self._turns[key] = turn + 1
            received.status = behaviour.status(turn)
            self.requests.append(received)
            self._by_path.setdefault(path, []).append(received)
            self._ids_by_path.setdefault(path, set()).add(received.webhook_id)
            self._lock.notify_all()
        return behaviour, behaviour.delay(turn)

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        path = request.query["path"]
        with self._lock:
            count = len(self._by_path.get(path, ()))
            unique = len(self._ids_by_path.get(path, ()))
        return web.json_response({"count": count, "unique": unique})

    async def _records(self, request: web.Request) -> web.Response:
        path = request.query["path"]
        with self._lock:
            records = [[r.webhook_id, r.at] for r in self._by_path.get(path, ())]
        return web.json_response({"records": records})


def peak_in_flight(
    requests: list[Received], since: float = float("-inf"), until: float = float("inf")
) -> int:
    """The most requests the receiver held at once between ``since`` and ``until`` (epoch
    seconds): what a sender's concurrency limit must bound."""
    edges: list[tuple[float, int]] = []
    for request in requests:
        end = request.answered_at or float("inf")
        if end < since or request.at > until:
            continue
        # An answer and an arrival at the same instant do not overlap: ends sort first.
        edges += [(max(request.at, since), 1), (end, -1)]
    peak = held = 0
    for _at, step in sorted(edges):
        held += step
        peak = max(peak, held)
    return peak


def busiest_second(requests: list[Received]) -> int:
    """The most arrivals in any one-second window: what a sender's rate limit must bound."""
    arrivals = sorted(request.at for request in requests)
    busiest = first = 0
    for last, at in enumerate(arrivals):
        while at - arrivals[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


def _listening_socket(port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Lets ``come_back`` listen on the port again while old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _respond(request: web.Request, status: int, behaviour: Behaviour) -> web.StreamResponse:
    headers = dict(behaviour.headers)
    if behaviour.body and "content-type" not in {name.lower() for name in headers}:
        headers["Content-Type"] = "application/json"
    if all(_sendable(text) for pair in headers.items() for text in pair):
        return web.Response(status=status, headers=headers, body=behaviour.body)
    _write_raw(request, status, headers, behaviour.body)
    # The connection is closed: aiohttp's own answer finds it so and is dropped.
    return web.Response(status=status)


def _sendable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _write_raw(request: web.Request, status: int, headers: dict[str, str], body: bytes) -> None:
    """Send the answer byte for byte, headers in Latin-1, and close the connection. aiohttp
    refuses to send a control character in a header, and the tests need a receiver that does,
    to prove that a malformed answer is logged safely."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    transport = request.transport
    assert transport is not None, "the request's connection is gone"
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    transport.close()


# -- the command line ------------------------------------------------------------------------------


def print_delivery(secret: str | None) -> Callable[[Received], None]:
    """A callback that prints each request, with its signature checked when there is a secret."""

    def show(received: Received) -> None:
        verdict = "signature not checked (no --secret)"
        if secret:
            from standardwebhooks.webhooks import Webhook, WebhookVerificationError

            try:
                Webhook(secret).verify(received.body, received.headers)
                verdict = "signature verified"
            except WebhookVerificationError as exc:
                verdict = f"SIGNATURE REJECTED: {exc}"
        print(
            f"POST {received.path}  webhook-id={received.headers.get('webhook-id')}  "
            f"{verdict}\n{received.body.decode(errors='replace')}\n",
            flush=True,
        )

    return show


def serve(
    port: int,
    *,
    status: int = 200,
    secret: str | None = None,
    delays: Sequence[tuple[str, float]] = (),
    backlog: int = LISTEN_BACKLOG,
    quiet: bool = False,
) -> None:
    """Answer every POST with ``status`` and an empty body (after its folder's delay) until
    Ctrl-C, printing each one unless ``quiet``."""
    receiver = Receiver(
        port,
        default=Behaviour([status], body=b""),
        backlog=backlog,
        on_receive=None if quiet else print_delivery(secret),
    )
    for folder, seconds in delays:
        receiver.behaviours[folder] = Behaviour([status], body=b"", delay_seconds=seconds)
    receiver.run(
        serving=lambda: print(
            f"listening on http://127.0.0.1:{receiver.port}/ (Ctrl-C to stop)", flush=True
        )
    )


def _folder_delay(text: str) -> tuple[str, float]:
    folder, _, seconds = text.partition("=")
    if not folder.startswith("/") or not seconds:
        raise argparse.ArgumentTypeError(f"expected /FOLDER/=SECONDS, got {text!r}")
    return folder, float(seconds)


def main(argv: list[str] | None = None) -> None:
    """``python -m app.receiver``: run a receiver in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m app.receiver", description="A local receiver that records each request."
    )
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (127.0.0.1)")
    parser.add_argument("--status", type=int, default=200, help="HTTP status to answer with")
    parser.add_argument("--secret", help="a whsec_ secret: verify each signature with it")
    parser.add_argument(
        "--delay",
        type=_folder_delay,
        action="append",
        default=[],
        metavar="/FOLDER/=SECONDS",
        help="answer paths under FOLDER after SECONDS (repeatable)",
    )
    parser.add_argument("--backlog", type=int, default=LISTEN_BACKLOG, help="listen backlog")
    parser.add_argument("--quiet", action="store_true", help="record without printing")
    args = parser.parse_args(argv)
    serve(
        args.port,
        status=args.status,
        secret=args.secret,
        delays=args.delay,
        backlog=args.backlog,
        quiet=args.quiet,
    )


if __name__ == "__main__":
    main()
