"""The one outbound HTTP client: the SSRF guard at connect time, timeouts, no redirects, caps.

Every delivery goes through ``OutboundClient.post`` so the rules about where and how we call out
live in one place:
- the host is resolved once, at connect time, every address is checked, and the socket is opened
  to exactly the address that was checked, so DNS rebinding between a check and the connect has
  nothing to slip through; TLS still verifies the certificate and sends SNI for the host name;
- a connect timeout, a read timeout and a total deadline (a receiver trickling bytes is cut off);
- redirects are never followed; at most ``response_body_limit_bytes`` of the answer is read;
- proxies from the environment are ignored, so they cannot route around the guard.
"""

from __future__ import annotations

import codecs
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError

from app.url_guard import BlockedUrl, check_url_shape, resolve_host
from config.settings import Settings

USER_AGENT = "Boomerang-Webhooks/0.1"


@dataclass(frozen=True)
class HttpResult:
    """What came back, or why nothing did.

    ``error_kind``: timeout, connection, blocked (the guard refused the address) or too_large
    (the body is over ``max_payload_bytes``; sending it again will not help).
    """

    status: int | None
    headers: dict[str, str] | None
    body: str | None
    body_truncated: bool
    duration_ms: int
    error: str | None = None
    error_kind: str | None = None


@dataclass
class _Attempt:
    """The sockets one attempt uses, so its deadline can cut them off wherever they block."""

    sockets: list[socket.socket] = field(default_factory=list)
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def track(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing left to cut off
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


class _GuardedConnectionMixin:
    """Resolve, check, then connect to the checked address itself."""

    guard_settings: Settings
    _dns_host: str
    port: int
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        host = self._dns_host
        addresses = resolve_host(host, self.port, self.guard_settings)
        last_error: Exception | None = None
        for address in addresses:
            # urllib3 connects to _dns_host; TLS keeps using self.host for SNI and verification.
            self._dns_host = address
            try:
                return super()._new_conn()  # type: ignore[misc]
            except OSError as exc:
                last_error = exc
            finally:
                self._dns_host = host
        assert last_error is not None
        raise last_error

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]
        attempt = getattr(_current, "attempt", None)
        if attempt is not None:
            # Also covers a kept-alive connection that this attempt did not open.
            attempt.track(self.sock)


def _pool_manager(settings: Settings, **kwargs: Any) -> PoolManager:
    http_connection = type(
        "GuardedHTTPConnection",
        (_GuardedConnectionMixin, HTTPConnection),
        {"guard_settings": settings},
    )
    https_connection = type(
        "GuardedHTTPSConnection",
        (_GuardedConnectionMixin, HTTPSConnection),
        {"guard_settings": settings},
    )
    manager = PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
        "https": type(
            "GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_connection}
        ),
    }
    return manager


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, settings: Settings, pool_size: int):
        self._guard_settings = settings
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self.poolmanager = _pool_manager(
            self._guard_settings, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


class OutboundClient:
    """A pooled, keep-alive client for callback POSTs; safe to share between threads."""

    def __init__(self, settings: Settings, pool_size: int = 64):
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = _GuardedAdapter(settings, pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
        """POST once under every rule above; never raises for what the receiver does."""
        started = time.monotonic()

        def failed(error: str, kind: str) -> HttpResult:
            elapsed = int((time.monotonic() - started) * 1000)
            return HttpResult(None, None, None, False, elapsed, error, kind)

        if len(body) > self.settings.max_payload_bytes:
            return failed(
                f"the body is {len(body)} bytes, over BOOMERANG_MAX_PAYLOAD_BYTES "
                f"({self.settings.max_payload_bytes})",
                "too_large",
            )
        try:
            check_url_shape(url, self.settings)
        except BlockedUrl as exc:
            return failed(str(exc), "blocked")

        attempt = _Attempt()
        _current.attempt = attempt
        watchdog = threading.Timer(self.settings.total_timeout_seconds, attempt.expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._send(url, body, headers, started)
        except BlockedUrl as exc:
            return failed(str(exc), "blocked")
        except requests.RequestException as exc:
            if attempt.expired:
                return failed(
                    f"gave up after BOOMERANG_TOTAL_TIMEOUT_SECONDS "
                    f"({self.settings.total_timeout_seconds:g} s)",
                    "timeout",
                )
            return failed(_describe(exc), "timeout" if _is_timeout(exc) else "connection")
        finally:
            watchdog.cancel()
            _current.attempt = None

    def _send(self, url: str, body: bytes, headers: dict[str, str], started: float) -> HttpResult:
        with self.session.post(
            url,
            data=body,
            headers={"User-Agent": USER_AGENT, **headers},
            timeout=(self.settings.connect_timeout_seconds, self.settings.read_timeout_seconds),
            allow_redirects=False,
            stream=True,
        ) as response:
            content, truncated = self._read_capped(response)
            return HttpResult(
                status=response.status_code,
                headers=dict(response.headers),
                body=content.decode(_codec(response.encoding), errors="replace"),
                body_truncated=truncated,
                duration_ms=int((time.monotonic() - started) * 1000),
            )

    def _read_capped(self, response: requests.Response) -> tuple[bytes, bool]:
        limit = self.settings.response_body_limit_bytes
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=8192):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(chunks)[:limit], True
        return b"".join(chunks), False

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()


def _codec(name: str | None) -> str:
    # The charset comes from the receiver; one Python does not know must not fail the attempt.
    try:
        return codecs.lookup(name or "utf-8").name
    except LookupError:
        return "utf-8"


def _is_timeout(exc: Exception) -> bool:
    # A read timeout while streaming the body surfaces as ConnectionError wrapping urllib3's.
    if isinstance(exc, requests.Timeout):
        return True
    reason: object = exc
    while isinstance(reason, Exception) and reason.args:
        if isinstance(reason, ReadTimeoutError | TimeoutError):
            return True
        reason = reason.args[0]
    return isinstance(reason, ReadTimeoutError | TimeoutError)


def _describe(exc: Exception) -> str:
    # requests nests the real cause; the innermost message is the one an operator can act on.
    reason = exc
    while reason.args and isinstance(reason.args[0], Exception):
        reason = reason.args[0]
    text = str(reason) or type(reason).__name__
    return f"{type(exc).__name__}: {text}"[:500]
