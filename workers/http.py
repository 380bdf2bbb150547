"""The one outbound HTTP client: timeouts, no redirects, a capped body read, the URL guard.

Every delivery goes through ``OutboundClient.post`` so the rules about where and how we call out
live in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from app.url_guard import BlockedUrl, resolve_and_check
from config.settings import Settings

USER_AGENT = "Boomerang-Webhooks/0.1"


@dataclass(frozen=True)
class HttpResult:
    """What came back, or why nothing did (``error_kind``: timeout, connection, blocked)."""

    status: int | None
    headers: dict[str, str] | None
    body: str | None
    body_truncated: bool
    duration_ms: int
    error: str | None = None
    error_kind: str | None = None


class OutboundClient:
    """A pooled, keep-alive client for callback POSTs; safe to share between threads."""

    def __init__(self, settings: Settings, pool_size: int = 64):
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = (
            False  # a proxy from the environment must not route around the guard
        )
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
        """POST once; never follow a redirect, never read more than the body limit."""
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            resolve_and_check(url, self.settings)
        except BlockedUrl as exc:
            return HttpResult(None, None, None, False, elapsed_ms(), str(exc), "blocked")
        try:
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
                    body=content.decode(response.encoding or "utf-8", errors="replace"),
                    body_truncated=truncated,
                    duration_ms=elapsed_ms(),
                )
        except requests.RequestException as exc:
            kind = "timeout" if _is_timeout(exc) else "connection"
            return HttpResult(None, None, None, False, elapsed_ms(), _describe(exc), kind)

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


def _is_timeout(exc: Exception) -> bool:
    # A read timeout while streaming the body surfaces as ConnectionError wrapping urllib3's.
    if isinstance(exc, requests.Timeout):
        return True
    reason: object = exc
    while isinstance(reason, Exception) and reason.args:
        if isinstance(reason, (ReadTimeoutError, TimeoutError)):
            return True
        reason = reason.args[0]
    return isinstance(reason, (ReadTimeoutError, TimeoutError))


def _describe(exc: Exception) -> str:
    # requests nests the real cause; the innermost message is the one an operator can act on.
    reason = exc
    while reason.args and isinstance(reason.args[0], Exception):
        reason = reason.args[0]
    text = str(reason) or type(reason).__name__
    return f"{type(exc).__name__}: {text}"[:500]
