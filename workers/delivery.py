"""The delivery pipeline: claim, prepare, call, then record the outcome.

Two short transactions around the HTTP call, never one across it: a slow receiver must not hold
a database connection or row lock for the length of its timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import commit_with_retry, is_connection_error
from app.services.deliveries import (
    AttemptRecord,
    ClaimedDelivery,
    claim_delivery,
    record_attempt,
)
from app.signing import sign_webhook
from config.settings import Settings
from workers.http import HttpResult, OutboundClient
from workers.retry import next_attempt_at, parse_retry_after

log = logging.getLogger(__name__)

REDACTED_HEADERS = {"webhook-signature", "authorization"}


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def build_headers(claimed: ClaimedDelivery, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; the timestamp is the attempt's own."""
    return {
        **claimed.headers,  # the tenant's own; checked at registration never to clash with ours
        "content-type": "application/json",
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


def is_success(status: int | None, success_status: int | None) -> bool:
    """2xx, or exactly the callback's ``success_status`` when it set one."""
    if status is None:
        return False
    if success_status is not None:
        return status == success_status
    return 200 <= status < 300


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
        if result.status in (429, 503):
            retry_after = parse_retry_after(header(result.headers, "Retry-After"), attempted_at)
    failed_attempts = claimed.attempt_count + 1
    next_at = None
    if not succeeded:
        next_at = next_attempt_at(
            failed_attempts,
            settings.retry_schedule,
            utcnow(),
            jitter=settings.retry_jitter,
            retry_after_seconds=retry_after,
        )
    if result.error_kind == "too_large":
        next_at = None  # the same bytes would be refused again
    if result.status == 410 and claimed.callback_id is not None:
        # 410 Gone: the receiver says the endpoint is retired. Stop calling it at all.
        disable_reason = "receiver answered 410 Gone"
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
    )


def deliver(
    session: Session,
    client: OutboundClient,
    settings: Settings,
    delivery_id: uuid.UUID,
    clock: Callable[[], datetime] = utcnow,
) -> bool | None:
    """Make one attempt: True or False for the outcome, None if it was not ours to send."""
    claimed = claim_delivery(session, delivery_id, clock(), settings)
    session.commit()
    if claimed is None:
        return None
    attempted_at = clock()
    headers = build_headers(claimed, attempted_at)
    try:
        result = client.post(claimed.url, claimed.body.encode(), headers)
    except Exception as exc:
        # Whatever goes wrong on our side must end as a logged, retried attempt: an exception
        # here would leave the lease to expire and the same POST to repeat without a record.
        log.exception("delivery %s: the attempt failed inside the client", claimed.id)
        result = HttpResult(
            None, None, None, False, 0, f"internal error: {type(exc).__name__}", "connection"
        )
    record = classify(claimed, headers, result, attempted_at, settings)

    def store(attempt: AttemptRecord) -> None:
        # The POST happened; sending it again because Postgres blinked would be a duplicate. Keep
        # trying to record it for as long as the lease keeps other workers away.
        left = settings.delivery_lease_seconds - (clock() - attempted_at).total_seconds() - 1
        commit_with_retry(
            session,
            lambda: record_attempt(session, claimed, attempt, settings),
            give_up_after_seconds=max(left, 0),
        )

    try:
        store(record)
    except DBAPIError as exc:
        if is_connection_error(exc):
            raise
        log.exception("delivery %s: the answer could not be stored; storing without it", claimed.id)
        record = dataclasses.replace(
            record,
            response_headers=None,
            response_body=None,
            error=f"the receiver's answer could not be stored ({type(exc.orig).__name__})",
        )
        store(record)
    log.info(
        "delivery %s to %s: %s", claimed.id, claimed.url, "ok" if record.succeeded else record.error
    )
    return record.succeeded
