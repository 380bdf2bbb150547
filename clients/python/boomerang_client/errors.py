"""Exceptions: one class per answer a caller handles differently, each carrying the error body.

Every Boomerang error has one shape, ``{"code", "status", "message", "errors"?}``; a proxy in
front of it may answer in another (an HTML 502), which is kept as text in ``body``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx


class BoomerangError(Exception):
    """An answer the operation does not succeed with."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        document = body if isinstance(body, dict) else {}
        self.status: int = status
        self.body: Any = body
        self.headers: Mapping[str, str] = headers or {}
        self.code: int = document.get("code", status)
        self.message: str = document.get("message") or _text_of(body) or f"HTTP {status}"
        self.errors: dict[str, Any] | None = document.get("errors")
        super().__init__(f"{status}: {self.message}")


class BadRequestError(BoomerangError):
    """400: the body was not JSON the server could read."""


class AuthenticationError(BoomerangError):
    """401: no valid API key."""


class NotFoundError(BoomerangError):
    """404: nothing with this id is yours (another tenant's ids look exactly like missing ones)."""


class ConflictError(BoomerangError):
    """409: an Idempotency-Key or event id used before with a different body."""


class PayloadTooLargeError(BoomerangError):
    """413: the body is over the server's size limit."""


class ValidationError(BoomerangError):
    """422: fields the server refused, named in ``errors`` by where they were sent."""

    @property
    def fields(self) -> dict[str, list[str]]:
        """The messages by field, over every location: ``{"type": [...]}``; a field inside a
        list or object is named by its path, as in ``events.3.type``."""
        flat: dict[str, list[str]] = {}
        for located in (self.errors or {}).values():
            if isinstance(located, Mapping):
                _flatten(located, (), flat)
        return flat


class RateLimitError(BoomerangError):
    """429: the tenant's rate limit is used up for now."""

    @property
    def retry_after(self) -> float | None:
        """Seconds until requests are accepted again, as the server said."""
        return _seconds(self.headers.get("Retry-After"))


class ServerError(BoomerangError):
    """5xx: the server, or a proxy in front of it, failed."""


class ServiceUnavailableError(ServerError):
    """503: the database or another dependency is down; try again after ``retry_after``."""

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.headers.get("Retry-After"))


class WaitTimeout(TimeoutError):
    """``wait`` ran out of time before the job finished; ``job`` is its last known state."""

    def __init__(self, job: Any) -> None:
        self.job = job
        status = job.get("status") if isinstance(job, dict) else None
        super().__init__(f"the job did not finish in time (last status: {status})")


class StreamInterrupted(ConnectionError):
    """A job's stream kept closing before the job's last event, however often it was resumed;
    ``last_event_id`` is where to resume after."""

    def __init__(self, last_event_id: str | None) -> None:
        self.last_event_id = last_event_id
        super().__init__(f"the stream closed before the job ended (last event: {last_event_id})")


class InvalidSignatureError(ValueError):
    """A callback's signature did not verify with any of the secrets given."""


BY_STATUS: dict[int, type[BoomerangError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_for(response: httpx.Response) -> BoomerangError:
    """The exception for an answer; its body must have been read."""
    status = response.status_code
    kind = BY_STATUS.get(status) or (ServerError if status >= 500 else BoomerangError)
    return kind(status, _body_of(response), response.headers)


def _body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def _text_of(body: Any) -> str:
    # Enough of a proxy's page to recognise it, not the whole of it.
    return body.strip()[:200] if isinstance(body, str) else ""


def _flatten(
    errors: Mapping[str, Any], within: tuple[str, ...], into: dict[str, list[str]]
) -> None:
    for name, value in errors.items():
        path = (*within, str(name))
        if isinstance(value, Mapping):
            _flatten(value, path, into)
        elif isinstance(value, list):
            into[".".join(path)] = [str(message) for message in value]
        else:
            into[".".join(path)] = [str(value)]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
