"""Each delivery attempt as a span, a child of whatever raised its event (a job's run, a
request), and the ``traceparent`` header that lets the receiver join that trace."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from app import tracing
from workers.delivery.http import HttpResult
from workers.delivery.store import AttemptRecord, ClaimedDelivery

if TYPE_CHECKING:
    from opentelemetry.trace import Span

NS_PER_MS = 1_000_000


def begin(claimed: ClaimedDelivery, headers: dict[str, str]) -> Span | None:
    """Start the attempt's span and put its ``traceparent`` in ``headers``; None, and the
    headers untouched, while tracing is off."""
    if not tracing.enabled():
        return None
    # The host, not the URL: some receivers carry their own secret in the path or query.
    url = urlsplit(claimed.url)
    attributes: dict[str, Any] = {
        "http.request.method": "POST",
        "server.address": url.hostname or "",
        "server.port": _port(url),
        "boomerang.delivery.id": str(claimed.id),
        "boomerang.delivery.attempt": claimed.attempt_count + 1,
        "boomerang.webhook_id": claimed.webhook_id,
        "boomerang.event_type": claimed.event_type,
    }
    if claimed.callback_id is not None:
        attributes["boomerang.callback.id"] = str(claimed.callback_id)
    span = tracing.start_span(
        "POST", parent=claimed.traceparent, kind="client", attributes=attributes
    )
    if span is not None:
        tracing.put_in_headers(span, headers)
    return span


def end(span: Span | None, result: HttpResult, record: AttemptRecord) -> None:
    """Say on the attempt's span what came back and what follows, and end it."""
    if span is None:
        return
    if result.status is not None:
        span.set_attribute("http.response.status_code", result.status)
    span.set_attribute("boomerang.delivery.outcome", outcome(record))
    if not record.succeeded:
        tracing.failed(span, record.cause)
    # When the answer came, not when the batch it came back in was recorded (up to a poll
    # interval and a transaction later).
    started = getattr(span, "start_time", None)
    span.end(end_time=started + result.duration_ms * NS_PER_MS if started else None)


def outcome(record: AttemptRecord) -> str:
    """What the attempt came to: ``succeeded``, ``retrying``, or ``failed`` for good."""
    if record.succeeded:
        return "succeeded"
    return "retrying" if record.next_attempt_at is not None else "failed"


def _port(url: SplitResult) -> int:
    try:
        port = url.port
    except ValueError:  # never raise on the way to a send; the client refuses such a URL
        port = None
    return port or (443 if url.scheme == "https" else 80)
