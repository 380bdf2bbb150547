"""The delivery pipeline's steps for a batch of claimed deliveries: sign, send, classify, record.

Two short transactions around the HTTP calls, never one across them: a slow receiver must not
hold a database connection or row lock for the length of its timeout. The drain
(``drain.py``) leases a batch (``store.claim_deliveries``), ``start``s each POST, and ``record``s
whatever comes back in one transaction.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import metrics, tracing
from app.clock import utcnow
from app.db import after_commit, commit_with_retry, is_connection_error
from app.headers import SENSITIVE_HEADERS
from app.logs import bind_log_context
from app.signing import sign_webhook
from config.settings import Settings
from workers.delivery import spans
from workers.delivery.http import ErrorKind, HttpResult, OutboundClient
from workers.delivery.retry import next_attempt_at, parse_retry_after
from workers.delivery.store import AttemptRecord, ClaimedDelivery, record_attempts

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

# Never written to the attempt log: our signature, and the tenant's own credentials.
REDACTED_HEADERS = {"webhook-signature", *SENSITIVE_HEADERS}

Outcome = tuple[ClaimedDelivery, AttemptRecord]


def build_headers(claimed: ClaimedDelivery, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; the timestamp is the attempt's own."""
    return {
        **claimed.headers,  # the tenant's own; checked at registration never to clash with ours
        "content-type": claimed.content_type,
        "webhook-id": claimed.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign_webhook(claimed.secrets, claimed.webhook_id, now, claimed.body),
    }


def header(headers: dict[str, str] | None, name: str) -> str | None:
    """A response header by name, whatever case the receiver (or an HTTP/2 proxy) used."""
    wanted = name.lower()
    return next((value for key, value in (headers or {}).items() if key.lower() == wanted), None)


def _storable(text: str | None) -> str | None:
    # Postgres text and JSONB cannot hold NUL; a receiver must not be able to break the log.
    return None if text is None else text.replace("\x00", "\ufffd")


# A receiver's answer may carry this header to steer us: ``abort-message`` stops retrying the
# message it answers, ``disable`` disables the callback.
RECEIVER_CONTROL_HEADER = "webhook-delivery"
ABORT_MESSAGE = "abort-message"
DISABLE = "disable"


def is_success(status: int | None, success_status: int | None) -> bool:
    """2xx, or exactly the callback's ``success_status`` when it set one."""
    if status is None:
        return False
    if success_status is not None:
        return status == success_status
    return 200 <= status < 300


def cause_class(result: HttpResult) -> str:
    """Why an attempt failed, in one word a tenant can act on: ``3xx``, ``4xx``, ``5xx`` (or the
    status class of a status the callback did not count as success), ``dns``, ``connect``,
    ``tls``, ``timeout``, ``too_large``, ``blocked`` (the SSRF guard) or ``configuration``."""
    if result.status is not None:
        return f"{result.status // 100}xx"
    if result.error_kind is ErrorKind.CONNECTION:
        return result.cause or "connect"
    return result.error_kind.value if result.error_kind is not None else "error"


def asked_to_wait(result: HttpResult, attempted_at: datetime) -> float | None:
    """The seconds a 429 or 503 asked for in its ``Retry-After``; None if it did not."""
    if result.status not in (429, 503):
        return None
    return parse_retry_after(header(result.headers, "Retry-After"), attempted_at)


def classify(
    claimed: ClaimedDelivery,
    headers: dict[str, str],
    result: HttpResult,
    attempted_at: datetime,
    settings: Settings,
) -> AttemptRecord:
    """Turn an HTTP result into a logged attempt and the delivery's next step."""
    succeeded = is_success(result.status, claimed.success_status)
    error = result.error
    disable_reason = None
    retry_after = None
    if not succeeded and result.status is not None:
        error = f"receiver answered {result.status}"
        if 300 <= result.status < 400:
            location = header(result.headers, "Location")
            error = f"redirect to {location!r} not followed" if location else error
        retry_after = asked_to_wait(result, attempted_at)
    failed_attempts = claimed.attempt_count + 1
    next_at = None
    if not succeeded:
        next_at = next_attempt_at(
            failed_attempts,
            claimed.retry_schedule
            if claimed.retry_schedule is not None
            else settings.retry_schedule,
            utcnow(),
            jitter=settings.retry_jitter,
            retry_after_seconds=retry_after,
        )
    if result.error_kind is not None and result.error_kind.permanent:
        next_at = None  # the same bytes would be refused again
    if result.status == 410 and claimed.callback_id is not None:
        # 410 Gone: the receiver says the endpoint is retired. Stop calling it at all.
        disable_reason = "receiver answered 410 Gone"
        next_at = None
    # The receiver in control (Svix's convention): stop retrying this one message, or stop
    # calling this callback at all, whatever the status.
    asked = (header(result.headers, RECEIVER_CONTROL_HEADER) or "").strip().lower()
    if asked == ABORT_MESSAGE and not succeeded:
        error = f"{error}; the receiver asked not to retry it ({RECEIVER_CONTROL_HEADER}: {asked})"
        next_at = None
    elif asked == DISABLE and claimed.callback_id is not None:
        disable_reason = f"the receiver asked to be disabled ({RECEIVER_CONTROL_HEADER}: {asked})"
        next_at = None
    logged_headers = {
        k: ("<redacted>" if k.lower() in REDACTED_HEADERS else v) for k, v in headers.items()
    }
    response_headers = None
    if result.headers is not None:
        response_headers = {
            _storable(key) or "": _storable(value) or "" for key, value in result.headers.items()
        }
    return AttemptRecord(
        attempted_at=attempted_at,
        request_headers=logged_headers,
        response_status=result.status,
        response_headers=response_headers,
        response_body=_storable(result.body),
        response_body_truncated=result.body_truncated,
        duration_ms=result.duration_ms,
        succeeded=succeeded,
        error=None if succeeded else _storable(error),
        next_attempt_at=next_at,
        disable_callback_reason=disable_reason,
        outcome=result.outcome,
        cause=None if succeeded else cause_class(result),
    )


@dataclass(frozen=True)
class Sent:
    """One attempt made: what was claimed, the headers it went with, and what came back."""

    claimed: ClaimedDelivery
    headers: dict[str, str]
    result: HttpResult
    attempted_at: datetime
    span: Span | None = None  # while tracing is on


@dataclass(frozen=True)
class InFlight:
    """One attempt under way on the client's event loop."""

    claimed: ClaimedDelivery
    headers: dict[str, str]
    attempted_at: datetime
    future: concurrent.futures.Future[HttpResult]
    span: Span | None = None  # while tracing is on

    def outcome(self) -> Sent:
        """The finished attempt; whatever went wrong on our side becomes a failed attempt."""
        try:
            result = self.future.result()
        except Exception as exc:
            # An exception here would leave the lease to expire and the same POST to repeat
            # without a record: log it as a retried attempt instead.
            log.error(
                "delivery %s: the attempt failed inside the client",
                self.claimed.id,
                exc_info=exc,
            )
            result = HttpResult(
                None,
                None,
                None,
                False,
                0,
                f"internal error: {type(exc).__name__}",
                ErrorKind.CONNECTION,
            )
        return Sent(self.claimed, self.headers, result, self.attempted_at, self.span)


def start(
    client: OutboundClient, claimed: ClaimedDelivery, clock: Callable[[], datetime] = utcnow
) -> InFlight:
    """Sign one claimed delivery and start its POST."""
    attempted_at = clock()
    headers = build_headers(claimed, attempted_at)
    span = spans.begin(claimed, headers)
    return InFlight(
        claimed,
        headers,
        attempted_at,
        client.submit(claimed.url, claimed.body.encode(), headers),
        span,
    )


def record(
    session: Session,
    settings: Settings,
    sent: Sequence[Sent],
    clock: Callable[[], datetime] = utcnow,
) -> list[AttemptRecord]:
    """Classify and store a batch of attempts; commits. The records, in the order given."""
    if not sent:
        return []
    outcomes = [
        (s.claimed, classify(s.claimed, s.headers, s.result, s.attempted_at, settings))
        for s in sent
    ]
    if tracing.enabled():
        # Before storing: a span is ended (and sent) even if Postgres refuses the batch.
        for one, (_, attempt) in zip(sent, outcomes, strict=True):
            spans.end(one.span, one.result, attempt)
    oldest = min(s.attempted_at for s in sent)
    try:
        _store(session, settings, outcomes, oldest, clock)
    except DBAPIError as exc:
        if is_connection_error(exc):
            raise
        # Something in one answer Postgres would not take: store each alone, and any that still
        # fails without the receiver's answer, rather than lose the batch.
        log.exception("a batch of %d attempts could not be stored; storing one by one", len(sent))
        outcomes = [_store_alone(session, settings, one, oldest, clock) for one in outcomes]
    _log_outcomes(outcomes)
    return [attempt for _, attempt in outcomes]


def _store(
    session: Session,
    settings: Settings,
    outcomes: Sequence[Outcome],
    oldest: datetime,
    clock: Callable[[], datetime],
) -> None:
    """Log the attempts and settle their deliveries in one transaction, counting them after."""
    # The POSTs happened; sending them again because Postgres blinked would duplicate them.
    # Keep trying to record them for as long as the leases keep other workers away.
    left = settings.delivery_lease_seconds - (clock() - oldest).total_seconds() - 1

    def work() -> None:
        record_attempts(session, outcomes, settings)
        count_after_commit(session, outcomes)

    commit_with_retry(session, work, give_up_after_seconds=max(left, 0))


def _store_alone(
    session: Session,
    settings: Settings,
    outcome: Outcome,
    oldest: datetime,
    clock: Callable[[], datetime],
) -> Outcome:
    """Store one attempt; if Postgres refuses the receiver's answer, store the attempt without
    it. The outcome as stored."""
    try:
        _store(session, settings, [outcome], oldest, clock)
        return outcome
    except DBAPIError as exc:
        if is_connection_error(exc):
            raise
        claimed, attempt = outcome
        bare = dataclasses.replace(
            attempt,
            response_headers=None,
            response_body=None,
            error=f"the receiver's answer could not be stored ({type(exc.orig).__name__})",
        )
        _store(session, settings, [(claimed, bare)], oldest, clock)
        return claimed, bare


def _log_outcomes(outcomes: Sequence[Outcome]) -> None:
    # A success is DEBUG: at thousands a second the log line cost more than the POST (profile:
    # 11 % of the drain's CPU), and every attempt is in the response log in Postgres anyway.
    # A failure is what an operator looks for, so it stays INFO.
    for claimed, attempt in outcomes:
        level = logging.DEBUG if attempt.succeeded else logging.INFO
        if not log.isEnabledFor(level):
            continue
        # The host, not the URL: some receivers carry their own secret in the path or query.
        with bind_log_context(delivery_id=claimed.id, tenant_id=claimed.tenant_id):
            log.log(
                level,
                "delivery %s to %s: %s",
                claimed.id,
                urlsplit(claimed.url).hostname,
                "ok" if attempt.succeeded else attempt.error,
            )


def count_after_commit(session: Session, outcomes: Sequence[Outcome]) -> None:
    """Metrics for a batch of attempts, counted only once they are in Postgres."""
    for claimed, attempt in outcomes:
        after_commit(session, metrics.delivery_attempted, attempt.outcome)
        if attempt.succeeded and claimed.raised_at is not None:
            # From the event (the job's end) to the receiver's answer.
            waited = attempt.attempted_at - claimed.raised_at
            after_commit(
                session,
                metrics.delivered_after,
                waited.total_seconds() + attempt.duration_ms / 1000,
            )
