"""The one outbound HTTP client: the SSRF guard at connect time, timeouts, no redirects, caps.

Every delivery goes through ``OutboundClient`` so the rules about where and how we call out live
in one place:
- the host is resolved once, at connect time, every address is checked, and the socket is opened
  to exactly the address that was checked, so DNS rebinding between a check and the connect has
  nothing to slip through; TLS still verifies the certificate and sends SNI for the host name;
- a connect timeout, a read timeout and a total deadline (a receiver trickling bytes is cut off);
- redirects are never followed; at most ``response_body_limit_bytes`` of the answer is read;
- proxies from the environment are ignored, so they cannot route around the guard.

It runs on aiohttp, on one event-loop thread per process: hundreds of attempts in flight cost a
few sockets each and no thread of their own. Callers on other threads get a
``concurrent.futures.Future`` (``submit``), which is what the drain waits on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
import uvloop
from aiohttp.abc import AbstractResolver, ResolveResult

from app.headers import HEADER_NAME, HEADER_VALUE
from app.url_guard import BlockedUrl, check_url_shape, literal_ip, resolve_host
from config.settings import Settings

USER_AGENT = "Boomerang-Webhooks/0.1"
# Resolved (and checked) addresses are reused this long; a name that changes its answers is
# checked again after that, and a connection always goes to an address that was checked.
DNS_CACHE_SECONDS = 10
CHECKED_URLS_KEPT = 10_000


class ErrorKind(StrEnum):
    """Why no answer came back. Each value is also the attempt's ``outcome`` metric label."""

    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    BLOCKED = "blocked"  # the SSRF guard refused the address
    TOO_LARGE = "too_large"  # the body is over max_payload_bytes
    # The callback's configuration cannot go on the wire (a header value HTTP cannot carry).
    CONFIGURATION = "configuration"

    @property
    def permanent(self) -> bool:
        """Whether sending the same bytes to the same URL again cannot turn out differently."""
        return self in (ErrorKind.TOO_LARGE, ErrorKind.CONFIGURATION)


@dataclass(frozen=True)
class HttpResult:
    """What came back, or why nothing did."""

    status: int | None
    headers: dict[str, str] | None
    body: str | None
    body_truncated: bool
    duration_ms: int
    error: str | None = None
    error_kind: ErrorKind | None = None
    # For a connection error, what failed: "dns", "tls" or "connect" (see ``connection_cause``).
    cause: str | None = None

    @property
    def outcome(self) -> str:
        """The ``outcome`` metric label: the status class when the receiver answered, otherwise
        why nothing came back."""
        if self.status is not None:
            return f"{self.status // 100}xx" if 200 <= self.status < 600 else "error"
        return self.error_kind.value if self.error_kind is not None else "error"


class _GuardedResolver(AbstractResolver):
    """Resolve with the system resolver, then refuse the name if any answer is not allowed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        # getaddrinfo blocks; the loop's default executor keeps the other attempts moving.
        addresses = await loop.run_in_executor(None, resolve_host, host, port, self.settings)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """The process's one loop for outbound HTTP, on its own daemon thread, started on first use
    (and again in a forked child, where the parent's thread does not exist). libuv's loop: the
    same POSTs cost about a third less CPU on it than on asyncio's own."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop = uvloop.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="outbound-http", daemon=True).start()
            _loop_pid = os.getpid()
        return _loop


class _Sessions:
    """A client's aiohttp session, kept apart from the client so it can be closed when the
    client is garbage-collected without ever being closed."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.pid = 0

    def current(self) -> aiohttp.ClientSession | None:
        return self.session if self.pid == os.getpid() else None

    def close(self) -> None:
        session, self.session = self.current(), None
        if session is not None and not session.closed:
            future = asyncio.run_coroutine_threadsafe(session.close(), _event_loop())
            if threading.current_thread().name != "outbound-http":
                with contextlib.suppress(Exception):  # closing is best effort
                    future.result(5)


class OutboundClient:
    """A pooled, keep-alive client for callback POSTs; safe to share between threads."""

    def __init__(self, settings: Settings, pool_size: int = 64):
        self.settings = settings
        self.pool_size = pool_size
        self._sessions = _Sessions()
        self._checked: dict[str, str | None] = {}  # used on the loop thread only
        weakref.finalize(self, self._sessions.close)

    def submit(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> concurrent.futures.Future[HttpResult]:
        """Start a POST under every rule above; its outcome arrives on the returned future and
        never is an exception for anything the receiver does."""
        return asyncio.run_coroutine_threadsafe(self._post(url, body, headers), _event_loop())

    def close(self) -> None:
        """Close pooled connections."""
        self._sessions.close()

    def _client_session(self) -> aiohttp.ClientSession:
        # Made on the loop thread, the only one that uses it.
        session = self._sessions.current()
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self.pool_size,
                resolver=_GuardedResolver(self.settings),
                ttl_dns_cache=DNS_CACHE_SECONDS,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # no proxies from the environment
                # Webhooks are stateless, and one process sends every tenant's: a cookie one
                # receiver set must never ride along to another tenant's callback on that host.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(
                    total=self.settings.total_timeout_seconds,
                    sock_connect=self.settings.connect_timeout_seconds,
                    sock_read=self.settings.read_timeout_seconds,
                ),
                headers={"User-Agent": USER_AGENT},
            )
            self._sessions.session, self._sessions.pid = session, os.getpid()
        return session

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
        started = time.monotonic()

        def failed(error: str, kind: ErrorKind, cause: str | None = None) -> HttpResult:
            elapsed = int((time.monotonic() - started) * 1000)
            return HttpResult(None, None, None, False, elapsed, error, kind, cause)

        if len(body) > self.settings.max_payload_bytes:
            return failed(
                f"the body is {len(body)} bytes, over BOOMERANG_MAX_PAYLOAD_BYTES "
                f"({self.settings.max_payload_bytes})",
                ErrorKind.TOO_LARGE,
            )
        refused = self._refusal(url)
        if refused is not None:
            return failed(refused, ErrorKind.BLOCKED)
        # Only a callback registered before its headers were checked as they are now can fail
        # these.
        bad_name = next((name for name in headers if not HEADER_NAME.match(name)), None)
        if bad_name is not None:
            return failed(
                f"{bad_name!r} is not a header name HTTP can carry (RFC 9110); "
                "change the callback's headers",
                ErrorKind.CONFIGURATION,
            )
        unsendable = next(
            (name for name, value in headers.items() if not HEADER_VALUE.match(value)), None
        )
        if unsendable is not None:
            return failed(
                f"the header {unsendable!r} has a value HTTP cannot carry (RFC 9110); "
                "change the callback's headers",
                ErrorKind.CONFIGURATION,
            )
        try:
            async with self._client_session().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                content, truncated = await self._read_capped(response)
                return HttpResult(
                    status=response.status,
                    headers=dict(response.headers),
                    body=_text(content, response.charset),
                    body_truncated=truncated,
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
        except BlockedUrl as exc:
            return failed(str(exc), ErrorKind.BLOCKED)
        except TimeoutError:
            elapsed = time.monotonic() - started
            if elapsed >= self.settings.total_timeout_seconds * 0.95:
                return failed(
                    f"gave up after BOOMERANG_TOTAL_TIMEOUT_SECONDS "
                    f"({self.settings.total_timeout_seconds:g} s)",
                    ErrorKind.TIMEOUT,
                )
            return failed(f"timed out after {elapsed:.1f} s", ErrorKind.TIMEOUT)
        except (aiohttp.ClientError, OSError) as exc:
            return failed(_describe(exc), ErrorKind.CONNECTION, connection_cause(exc))

    def _refusal(self, url: str) -> str | None:
        """Why the URL's shape (or its address literal) is refused, or None. Pure for a given
        URL and settings, so remembered: the same few URLs come by thousands of times."""
        if url not in self._checked:
            if len(self._checked) >= CHECKED_URLS_KEPT:
                self._checked.clear()
            try:
                host = check_url_shape(url, self.settings)
                if literal_ip(host) is not None:
                    # aiohttp skips the resolver for an address literal: check it here instead.
                    resolve_host(host, 0, self.settings)
                self._checked[url] = None
            except BlockedUrl as exc:
                self._checked[url] = str(exc)
        return self._checked[url]

    async def _read_capped(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        limit = self.settings.response_body_limit_bytes
        content = await response.content.read(limit + 1)
        chunks = [content]
        # read(n) may stop short of n at a chunk boundary; keep going up to the cap.
        while len(content) <= limit and not response.content.at_eof():
            more = await response.content.read(limit + 1 - len(content))
            if not more:
                break
            chunks.append(more)
            content = b"".join(chunks)
            chunks = [content]
        if len(content) > limit:
            return content[:limit], True
        return content, False


def _text(content: bytes, charset: str | None) -> str:
    # The charset comes from the receiver: one Python does not know, or a bytes codec such as
    # base64 that is no text encoding at all, must not fail the attempt.
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


def connection_cause(exc: BaseException) -> str:
    """What a connection error was: the name did not resolve ("dns"), the TLS handshake or the
    certificate failed ("tls"), or the connection itself ("connect")."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError | socket.gaierror):
        return "dns"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls"
    return "connect"


def _describe(exc: BaseException) -> str:
    # aiohttp nests the real cause; the innermost message is the one an operator can act on.
    reason: BaseException = exc
    while reason.__cause__ is not None:
        reason = reason.__cause__
    text = str(exc) if reason is exc else f"{exc} ({reason})"
    return f"{type(exc).__name__}: {text or type(reason).__name__}"[:500]
