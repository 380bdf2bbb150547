"""The delivery log's store: lease due deliveries and settle them with their attempts, in batches.

A batch costs a fixed number of round trips however many deliveries it holds: one claim, three
reads for what to send, and on the way back one UPDATE, one INSERT and a statement per callback
whose health changed. That, not the HTTP call, is what bounds throughput per process.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, exists, or_, select, text, update
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.events import CALLBACK_TEST, DELIVERY_EXHAUSTED, webhook_id
from app.formats import UnknownFormat, after_failed, render_for
from app.headers import masked_headers
from app.models import Callback, Delivery, DeliveryStatus, Message
from app.prepared import PreparedStatement
from app.services.callback_health import (
    disable_callback,
    note_attempt_outcomes,
    tell_other_callbacks,
)
from app.services.callbacks import signing_secrets
from app.services.ordering import lock_key, wake_next
from config.settings import Settings
from workers.delivery.lanes import LaneLimits

log = logging.getLogger(__name__)

# How much of the last response body an event about a failure carries: enough to see why.
EXHAUSTED_BODY_CHARS = 1024


def lane_of(callback_id: uuid.UUID | None, url: str) -> str:
    """What the per-callback concurrency cap counts by: the callback, or an ad-hoc URL."""
    return str(callback_id) if callback_id is not None else url


@dataclass(frozen=True)
class ClaimedDelivery:
    """Everything needed to send, read inside the claim so no transaction spans the HTTP call."""

    id: uuid.UUID
    lease_id: uuid.UUID
    url: str
    webhook_id: str
    body: str
    secrets: tuple[str, ...]
    callback_id: uuid.UUID | None
    success_status: int | None
    attempt_count: int
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Whether the callback was in a failure streak when claimed: a success then has one to end.
    callback_failing: bool = True
    # When the event was raised (for a job event: when the job finished).
    raised_at: datetime | None = None
    tenant_id: uuid.UUID | None = None
    # The callback's own fleet-wide limits; None: the defaults (see shared_lanes.py).
    max_concurrency: int | None = None
    rate_limit_per_second: float | None = None
    # The callback's own retry schedule; None: the service's.
    retry_schedule: tuple[int, ...] | None = None
    event_type: str = ""
    ordering_key: str | None = None
    # The trace context the event was raised in (app/tracing.py); None while tracing is off.
    traceparent: str | None = None

    @property
    def lane(self) -> str:
        return lane_of(self.callback_id, self.url)


# Lease up to :limit due deliveries nobody holds, at most :cap per lane (less where the caller
# has some of that lane in flight already, none from lanes it reports full). The inner scan locks
# candidates with SKIP LOCKED so concurrent claimers split the work instead of queueing behind one
# another; a window function cannot sit beside FOR UPDATE, hence the layers.
_CLAIM = PreparedStatement(
    "boomerang_claim_deliveries",
    text(
        """
    WITH candidate AS (
        SELECT id, callback_id, url, next_attempt_at
        FROM delivery
        WHERE status = 'pending'
          AND next_attempt_at <= :now
          AND (locked_until IS NULL OR locked_until < :now)
          AND NOT (coalesce(callback_id::text, url) = ANY(CAST(:full_lanes AS text[])))
          AND (:any_id OR id = ANY(CAST(:ids AS uuid[])))
          -- A keyed delivery goes only once nothing earlier of its key to its lane is pending:
          -- when it is the first of them. Asked in ix_delivery_ordering_pending's order, so even
          -- a plan made while the table was nearly empty (a new database: one generic plan per
          -- connection, see app/prepared.py) reads one entry of that index per candidate, rather
          -- than walking the due index, which made each claim quadratic in the deliveries due.
          AND (ordering_key IS NULL OR ordering_seq <= (
              SELECT ahead.ordering_seq FROM delivery AS ahead
              WHERE ahead.status = 'pending'
                AND coalesce(ahead.callback_id::text, ahead.url)
                    = coalesce(delivery.callback_id::text, delivery.url)
                AND ahead.ordering_key = delivery.ordering_key
                AND ahead.tenant_id = delivery.tenant_id
              ORDER BY coalesce(ahead.callback_id::text, ahead.url), ahead.ordering_key,
                       ahead.ordering_seq
              LIMIT 1))
        ORDER BY next_attempt_at
        LIMIT :scan
        FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT id, next_attempt_at, coalesce(callback_id::text, url) AS lane,
               row_number() OVER (
                   PARTITION BY coalesce(callback_id::text, url) ORDER BY next_attempt_at
               ) AS place
        FROM candidate
    ), chosen AS (
        SELECT ranked.id
        FROM ranked
        LEFT JOIN unnest(CAST(:room_lanes AS text[]), CAST(:rooms AS int[])) AS room(lane, room)
            ON room.lane = ranked.lane
        WHERE ranked.place <= coalesce(room.room, :cap)
        ORDER BY ranked.next_attempt_at
        LIMIT :limit
    )
    UPDATE delivery
    SET lease_id = :lease_id, locked_until = :locked_until,
        -- Said in the body from the first attempt on: the key's earlier messages this lane gave
        -- up on since its last success (at most 100 looked back at).
        preceding_failed = CASE
            WHEN delivery.ordering_key IS NULL OR delivery.preceding_failed IS NOT NULL
                THEN delivery.preceding_failed
            ELSE coalesce((
                SELECT array_agg(earlier.message_id ORDER BY earlier.ordering_seq)
                FROM (
                    SELECT before.message_id, before.ordering_seq, before.status,
                           count(*) FILTER (WHERE before.status = 'succeeded')
                               OVER (ORDER BY before.ordering_seq DESC) AS successes_since
                    FROM (
                        SELECT message_id, ordering_seq, status
                        FROM delivery AS past
                        WHERE coalesce(past.callback_id::text, past.url)
                              = coalesce(delivery.callback_id::text, delivery.url)
                          AND past.ordering_key = delivery.ordering_key
                          AND past.tenant_id = delivery.tenant_id
                          AND past.ordering_seq < delivery.ordering_seq
                        ORDER BY past.ordering_seq DESC
                        LIMIT 100
                    ) AS before
                ) AS earlier
                WHERE earlier.successes_since = 0 AND earlier.status IN ('failed', 'cancelled')
            ), '{}')
        END
    FROM chosen, message
    WHERE delivery.id = chosen.id AND message.id = delivery.message_id
    RETURNING delivery.id, delivery.tenant_id, delivery.message_id, delivery.callback_id,
              delivery.url, delivery.attempt_count, delivery.ordering_key,
              delivery.preceding_failed,
              -- What is sent: read with the lease, so a claim is one round trip fewer.
              message.tenant_id AS message_tenant_id, message.job_id AS message_job_id,
              message.event_type AS message_event_type,
              message.body AS message_body, message.created_at AS message_created_at,
              message.traceparent AS message_traceparent
    """
    ),
)


def claim_deliveries(
    session: Session,
    now: datetime,
    settings: Settings,
    *,
    limit: int,
    in_flight: Mapping[str, int] | None = None,
    lane_limits: LaneLimits | None = None,
    only: Collection[uuid.UUID] | None = None,
    held: Collection[str] = (),
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries, oldest due first, within each lane's limit.

    ``in_flight`` counts what the caller is already sending per lane (``lane_of``);
    ``lane_limits`` are the limits it learned (without them, every lane may hold
    ``callback_concurrency``); ``only`` restricts the claim to those ids; lanes in ``held`` are
    skipped (full or paused across the fleet). Deliveries whose callback
    was deleted or disabled since they were queued are settled here instead of sent.
    """
    if limit <= 0:
        return []
    lease_id = uuid.uuid4()
    rooms = _lane_rooms(settings, in_flight or {}, lane_limits)
    rooms.full.extend(lane for lane in held if lane not in rooms.full)
    rows = _lease(session, now, settings, lease_id, limit, rooms, only)
    if not rows:
        return []
    context = _load_context(session, rows)
    claimed: list[ClaimedDelivery] = []
    stopped: dict[uuid.UUID, tuple[Row[Any], DeliveryStatus]] = {}
    for row in rows:
        prepared = _prepare(row, context, lease_id, now)
        if isinstance(prepared, ClaimedDelivery):
            claimed.append(prepared)
        else:
            stopped[row.id] = (row, prepared)
    _settle_stopped(session, stopped, now)
    return claimed


@dataclass(frozen=True)
class _Rooms:
    """How many more attempts each lane may start: none for ``full`` lanes, ``partial`` for the
    lanes listed, ``default`` for any other."""

    full: list[str]
    partial: dict[str, int]
    default: int


def _lane_rooms(
    settings: Settings, in_flight: Mapping[str, int], lane_limits: LaneLimits | None
) -> _Rooms:
    if lane_limits is None:
        cap = settings.callback_concurrency
        full = [lane for lane, count in in_flight.items() if count >= cap]
        partial = {lane: cap - count for lane, count in in_flight.items() if 0 < count < cap}
        return _Rooms(full, partial, cap)
    lanes = set(in_flight) | set(lane_limits.known())
    room = {lane: lane_limits.limit(lane) - in_flight.get(lane, 0) for lane in lanes}
    return _Rooms(
        full=[lane for lane, left in room.items() if left <= 0],
        partial={lane: left for lane, left in room.items() if left > 0},
        default=lane_limits.initial,
    )


def _lease(
    session: Session,
    now: datetime,
    settings: Settings,
    lease_id: uuid.UUID,
    limit: int,
    rooms: _Rooms,
    only: Collection[uuid.UUID] | None,
) -> list[Row[Any]]:
    """Run the claim statement: the leased rows (id, tenant, message, callback, url, count)."""
    return list(
        _CLAIM.execute(
            session.connection(),
            {
                "now": now,
                "full_lanes": rooms.full,
                "any_id": only is None,
                "ids": [str(delivery_id) for delivery_id in only or ()],
                # Look past the head of the queue far enough to fill the batch from other lanes
                # when one lane's share is used up.
                "scan": limit * 4,
                "room_lanes": list(rooms.partial),
                "rooms": list(rooms.partial.values()),
                "cap": rooms.default,
                "limit": limit,
                "lease_id": lease_id,
                "locked_until": now + timedelta(seconds=settings.delivery_lease_seconds),
            },
        )
    )


# (Columns named, not *: a prepared statement's result cannot change shape when a migration adds
# a column under a worker still running.)
_LEASED_CALLBACKS = PreparedStatement(
    "boomerang_leased_callbacks",
    text(
        f"SELECT {', '.join(Callback.__table__.columns.keys())} FROM callback"
        " WHERE id = ANY(CAST(:ids AS uuid[]))"
    ),
)
_ADHOC_SECRETS = PreparedStatement(
    "boomerang_adhoc_secrets",
    text("SELECT id, signing_secret FROM tenant WHERE id = ANY(CAST(:ids AS uuid[]))"),
)


@dataclass(frozen=True)
class _Context:
    """What the leased rows point at: their messages came with the lease, the rest is read in
    one query per table."""

    messages: dict[uuid.UUID, Message]
    callbacks: dict[uuid.UUID, Callback]
    tenant_secrets: dict[uuid.UUID, str]


@dataclass(frozen=True)
class _LeasedMessage:
    """The columns of a message that rendering and signing read, as the claim returned them."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    job_id: uuid.UUID | None
    event_type: str
    body: Any
    created_at: datetime
    traceparent: str | None


def _load_context(session: Session, rows: Sequence[Row[Any]]) -> _Context:
    messages = {
        row.message_id: cast(
            Message,
            _LeasedMessage(
                id=row.message_id,
                tenant_id=row.message_tenant_id,
                job_id=row.message_job_id,
                event_type=row.message_event_type,
                body=row.message_body,
                created_at=row.message_created_at,
                traceparent=row.message_traceparent,
            ),
        )
        for row in rows
    }
    # Plain rows, not through the ORM, and from prepared statements: read-only, and building,
    # compiling and describing the ORM's query each claim cost more of the worker's time than the
    # claim itself. They carry what the renderers and the signer read.
    connection = session.connection()
    callback_ids = {str(row.callback_id) for row in rows if row.callback_id is not None}
    callbacks = (
        {
            row.id: cast(Callback, row)
            for row in _LEASED_CALLBACKS.execute(connection, {"ids": list(callback_ids)})
        }
        if callback_ids
        else {}
    )
    adhoc_tenants = {str(row.tenant_id) for row in rows if row.callback_id is None}
    tenant_secrets: dict[uuid.UUID, str] = (
        {
            row.id: row.signing_secret
            for row in _ADHOC_SECRETS.execute(connection, {"ids": list(adhoc_tenants)})
        }
        if adhoc_tenants
        else {}
    )
    return _Context(messages, callbacks, tenant_secrets)


def _prepare(
    row: Row[Any], context: _Context, lease_id: uuid.UUID, now: datetime
) -> ClaimedDelivery | DeliveryStatus:
    """What to send for one leased row, or the status it stops in without being sent."""
    message = context.messages[row.message_id]
    callback = context.callbacks.get(row.callback_id) if row.callback_id is not None else None
    if row.callback_id is not None:
        if callback is None:
            return DeliveryStatus.CANCELLED  # deleted: nothing left to send to
        if not callback.enabled and message.event_type != CALLBACK_TEST:
            return DeliveryStatus.FAILED  # disabled: failed, so a recover can send it later
    try:
        rendered = render_for(callback, message)
        if row.preceding_failed:
            rendered = after_failed(rendered, [webhook_id(m) for m in row.preceding_failed])
    except UnknownFormat:
        # Only if a released format version were ever removed: fail this one, not the batch.
        log.exception("delivery %s: its callback's format is unknown", row.id)
        return DeliveryStatus.FAILED
    secrets = (
        signing_secrets(callback, now)
        if callback is not None
        else [context.tenant_secrets.get(row.tenant_id) or ""]
    )
    return ClaimedDelivery(
        id=row.id,
        lease_id=lease_id,
        url=row.url,
        webhook_id=webhook_id(message.id),
        body=rendered.body,
        content_type=rendered.content_type,
        secrets=tuple(secrets),
        callback_id=row.callback_id,
        success_status=callback.success_status if callback is not None else None,
        attempt_count=row.attempt_count,
        headers=dict(callback.headers) if callback is not None else {},
        callback_failing=callback is not None and callback.consecutive_failures > 0,
        raised_at=message.created_at,
        tenant_id=row.tenant_id,
        max_concurrency=callback.max_concurrency if callback is not None else None,
        rate_limit_per_second=callback.rate_limit_per_second if callback is not None else None,
        retry_schedule=(
            tuple(callback.retry_schedule)
            if callback is not None and callback.retry_schedule is not None
            else None
        ),
        event_type=message.event_type,
        ordering_key=row.ordering_key,
        traceparent=message.traceparent,
    )


def _settle_stopped(
    session: Session, stopped: Mapping[uuid.UUID, tuple[Row[Any], DeliveryStatus]], now: datetime
) -> None:
    """End the deliveries that were leased but will not be sent, one statement per status, and
    let what waited behind them go."""
    statuses = {row.id: status for row, status in stopped.values()}
    for status in set(statuses.values()):
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([i for i, s in statuses.items() if s == status]))
            .values(status=status, next_attempt_at=None, locked_until=None, lease_id=None)
        )
    wake_next(
        session, ((row.id, row.tenant_id, row.ordering_key) for row, _ in stopped.values()), now
    )


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt's outcome, as the delivery pipeline classified it."""

    attempted_at: datetime
    request_headers: dict[str, str]
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    response_body_truncated: bool
    duration_ms: int
    succeeded: bool
    error: str | None
    next_attempt_at: datetime | None  # None with a failure: no retries left
    disable_callback_reason: str | None = None
    # The ``outcome`` metric label: the status class, or why nothing came back.
    outcome: str = "error"
    # A failure's cause class (``pipeline.cause_class``); None for a success.
    cause: str | None = None


# The attempt log's columns, as the JSON array each batch arrives in. The worker serialises a
# batch in one json.dumps instead of binding eleven values a row, which was the largest part of
# recording a batch in the worker's own time.
_ATTEMPTS = """
    jsonb_to_recordset(CAST(:attempts AS jsonb)) AS attempt(
        id uuid, delivery_id uuid, attempted_at timestamptz, request_headers jsonb,
        response_status integer, response_headers jsonb, response_body text,
        response_body_truncated boolean, duration_ms integer, succeeded boolean, error text
    )
"""
_ATTEMPT_COLUMNS = """
    id, delivery_id, attempted_at, request_headers, response_status, response_headers,
    response_body, response_body_truncated, duration_ms, succeeded, error
"""

# Move each delivery on, but only where this worker still holds the lease: one that overran its
# lease must not undo a newer attempt's result. And log the attempts of those it moved on, in the
# same statement: one round trip records a whole batch (the rest are logged apart, below).
#
# The batch's callbacks are locked first, in id order, before any delivery row (the one-time
# filter runs before the scan): deleting a callback locks the callback before its deliveries,
# so the two queue on the callback instead of each taking some of the same delivery rows and
# waiting for the rest (a multi-row UPDATE takes its rows in no set order). KEY SHARE, the
# weakest lock: only a delete waits for it, so processes settling attempts to one callback do
# not queue behind each other, nor behind a change to the callback's settings. The attempts
# logged reference only rows this statement updated, which it holds locked: a delete cannot
# take them from under the log's foreign key.
_SETTLE_AND_LOG = PreparedStatement(
    "boomerang_settle_and_log_deliveries",
    text(
        f"""
    WITH held AS (
        SELECT id FROM callback
        WHERE id IN (SELECT (item->>'callback_id')::uuid
                     FROM jsonb_array_elements(CAST(:outcomes AS jsonb)) AS item)
        ORDER BY id
        FOR KEY SHARE
    ), settled AS (
        UPDATE delivery
        SET attempt_count = delivery.attempt_count + 1,
            last_attempt_at = outcome.attempted_at,
            locked_until = NULL,
            lease_id = NULL,
            status = outcome.status,
            succeeded_at = coalesce(outcome.succeeded_at, delivery.succeeded_at),
            next_attempt_at = outcome.next_attempt_at
        FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS outcome(
            id uuid, lease_id uuid, attempted_at timestamptz, status text,
            succeeded_at timestamptz, next_attempt_at timestamptz
        )
        WHERE (SELECT count(*) FROM held) >= 0
          AND delivery.id = outcome.id AND delivery.lease_id = outcome.lease_id
          -- cancelled (its callback deleted) while the attempt was under way: it stays cancelled
          AND delivery.status = 'pending'
        RETURNING delivery.id
    ), logged AS (
        INSERT INTO delivery_attempt ({_ATTEMPT_COLUMNS})
        SELECT {", ".join(f"attempt.{c.strip()}" for c in _ATTEMPT_COLUMNS.split(","))}
        FROM {_ATTEMPTS}
        JOIN settled ON settled.id = attempt.delivery_id
    ), locked AS MATERIALIZED (
        -- The ordering keys of the settled deliveries that ended, tried without waiting, so
        -- that waking what waits behind them needs no statement of its own to take them
        -- (app/services/ordering.py). Their wake reads after this statement: after the locks.
        SELECT key.lock_id, pg_try_advisory_xact_lock(key.lock_id) AS got
        FROM (SELECT DISTINCT outcome.lock_id
              FROM jsonb_to_recordset(CAST(:outcomes AS jsonb))
                   AS outcome(id uuid, status text, lock_id bigint)
              JOIN settled ON settled.id = outcome.id
              WHERE outcome.lock_id IS NOT NULL AND outcome.status <> 'pending') AS key
    )
    SELECT id, NULL::bigint AS lock_id FROM settled
    UNION ALL
    SELECT NULL, lock_id FROM locked WHERE got
    """
    ),
)


# Log attempts whose deliveries this worker no longer held when it settled them.
_LOG_ATTEMPTS = PreparedStatement(
    "boomerang_log_attempts",
    text(
        f"INSERT INTO delivery_attempt ({_ATTEMPT_COLUMNS})"
        f" SELECT {_ATTEMPT_COLUMNS} FROM {_ATTEMPTS}"
    ),
)


def _status_after(record: AttemptRecord) -> DeliveryStatus:
    if record.succeeded:
        return DeliveryStatus.SUCCEEDED
    return DeliveryStatus.PENDING if record.next_attempt_at is not None else DeliveryStatus.FAILED


def record_attempts(
    session: Session,
    outcomes: Sequence[tuple[ClaimedDelivery, AttemptRecord]],
    settings: Settings,
) -> set[uuid.UUID]:
    """Log every attempt and move each delivery on where this worker still holds its lease.

    Returns the ids whose lease was still ours. An attempt is logged even when another worker
    holds its delivery now (it happened), unless the delivery itself is gone with its tenant.
    """
    if not outcomes:
        return set()
    payload = [
        {
            "id": str(claimed.id),
            "callback_id": str(claimed.callback_id) if claimed.callback_id else None,
            "lease_id": str(claimed.lease_id),
            "attempted_at": record.attempted_at.isoformat(),
            "status": _status_after(record).value,
            "succeeded_at": record.attempted_at.isoformat() if record.succeeded else None,
            "next_attempt_at": (
                record.next_attempt_at.isoformat()
                if record.next_attempt_at is not None and not record.succeeded
                else None
            ),
            "lock_id": (
                lock_key(claimed.tenant_id, claimed.ordering_key)
                if claimed.tenant_id is not None and claimed.ordering_key
                else None
            ),
        }
        for claimed, record in outcomes
    ]
    attempts = {
        claimed.id: {
            "id": str(uuid.uuid4()),
            "delivery_id": str(claimed.id),
            "attempted_at": record.attempted_at.isoformat(),
            "request_headers": record.request_headers,
            "response_status": record.response_status,
            "response_headers": record.response_headers,
            "response_body": record.response_body,
            "response_body_truncated": record.response_body_truncated,
            "duration_ms": record.duration_ms,
            "succeeded": record.succeeded,
            "error": record.error,
        }
        for claimed, record in outcomes
    }
    rows = _SETTLE_AND_LOG.execute(
        session.connection(),
        {"outcomes": json.dumps(payload), "attempts": json.dumps(list(attempts.values()))},
    ).all()
    ours = {row.id for row in rows if row.id is not None}
    keys_held = {row.lock_id for row in rows if row.lock_id is not None}
    not_ours = set(attempts) - ours
    if not_ours:
        _log_not_ours(session, [attempts[delivery_id] for delivery_id in not_ours])
    settled = [o for o in outcomes if o[0].id in ours]
    wake_next(
        session,
        (
            (claimed.id, claimed.tenant_id, claimed.ordering_key)
            for claimed, record in settled
            if claimed.tenant_id is not None and _status_after(record) is not DeliveryStatus.PENDING
        ),
        # Due from when the one ahead ended, on the clock the claim compares against.
        max((record.attempted_at for _, record in settled), default=utcnow()),
        keys_held=keys_held,
    )
    _note_callback_health(session, settled, settings)
    for claimed, record in settled:
        if _status_after(record) is DeliveryStatus.FAILED:
            tell_exhausted(session, claimed, record, settings)
    session.flush()
    return ours


def _log_not_ours(session: Session, attempts: list[dict[str, Any]]) -> None:
    """Log attempts whose deliveries another worker holds now (they happened), except those
    deleted with their tenant while the attempt was under way: nothing is left to log them
    against."""
    # KEY SHARE: a tenant deleted between this look and the INSERT would fail the whole batch.
    still_there = set(
        session.scalars(
            select(Delivery.id)
            .where(Delivery.id.in_([attempt["delivery_id"] for attempt in attempts]))
            .with_for_update(key_share=True)
        )
    )
    logged = [attempt for attempt in attempts if uuid.UUID(attempt["delivery_id"]) in still_there]
    if logged:
        _LOG_ATTEMPTS.execute(session.connection(), {"attempts": json.dumps(logged)})


def _note_callback_health(
    session: Session,
    outcomes: Sequence[tuple[ClaimedDelivery, AttemptRecord]],
    settings: Settings,
) -> None:
    by_callback: dict[uuid.UUID, list[tuple[ClaimedDelivery, AttemptRecord]]] = defaultdict(list)
    for claimed, record in outcomes:
        if claimed.callback_id is not None:
            by_callback[claimed.callback_id].append((claimed, record))
    # In id order, so two workers recording overlapping batches lock callbacks in the same order.
    for callback_id, entries in sorted(by_callback.items()):
        failures = sorted((r for _, r in entries if not r.succeeded), key=lambda r: r.attempted_at)
        last_failure = failure_summary(failures[-1]) if failures else None
        gone = next((r for _, r in entries if r.disable_callback_reason), None)
        if gone is not None:
            disable_callback(
                session,
                callback_id,
                gone.disable_callback_reason or "",
                gone.attempted_at,
                failure_summary(gone),
            )
            continue
        # A healthy callback's success changes nothing: skip the statement (and its row lock).
        if all(r.succeeded for _, r in entries) and not any(c.callback_failing for c, _ in entries):
            continue
        ordered = sorted((record for _, record in entries), key=lambda r: r.attempted_at)
        note_attempt_outcomes(
            session,
            callback_id,
            [record.succeeded for record in ordered],
            ordered[-1].attempted_at,
            settings,
            last_failure,
        )


def failure_summary(record: AttemptRecord) -> dict[str, Any]:
    """What events about a failure carry: its cause class, its error and the response that came
    back (credentials masked, the body cut short), if one did."""
    response = None
    if record.response_status is not None:
        body = record.response_body or ""
        response = {
            "status": record.response_status,
            "headers": masked_headers(record.response_headers or {}),
            "body": body[:EXHAUSTED_BODY_CHARS],
            "body_truncated": record.response_body_truncated or len(body) > EXHAUSTED_BODY_CHARS,
        }
    return {"cause": record.cause, "error": record.error, "last_response": response}


def tell_exhausted(
    session: Session, claimed: ClaimedDelivery, record: AttemptRecord, settings: Settings
) -> None:
    """Send ``delivery.exhausted`` about a delivery that gave up to the tenant's other callbacks
    that subscribe to it: what was sent, what came back (credentials masked), why, and where to
    look. Not for a ``delivery.exhausted`` that gave up: two dead callbacks would otherwise tell
    each other forever."""
    if claimed.event_type == DELIVERY_EXHAUSTED or claimed.tenant_id is None:
        return
    data = {
        "delivery_id": str(claimed.id),
        "webhook_id": claimed.webhook_id,
        "event_type": claimed.event_type,
        "callback_id": str(claimed.callback_id) if claimed.callback_id else None,
        "url": claimed.url,
        "attempts": claimed.attempt_count + 1,
        **failure_summary(record),
        "last_request": {"headers": record.request_headers},
        "exhausted_at": record.attempted_at.isoformat(),
        "portal_url": f"{settings.public_url}/portal/deliveries/{claimed.id}",
    }
    tell_other_callbacks(
        session,
        claimed.tenant_id,
        claimed.callback_id,
        DELIVERY_EXHAUSTED,
        data,
        record.attempted_at,
    )


def has_due_deliveries(session: Session, now: datetime) -> bool:
    """Whether any pending delivery is due and not held by a worker: a cheap indexed probe."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    Delivery.status == DeliveryStatus.PENDING,
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
                )
            )
        )
    )


def put_back(
    session: Session, claimed: Sequence[ClaimedDelivery], due_at: datetime | None = None
) -> None:
    """Release leased deliveries unsent, due again at ``due_at`` (no attempt was made); without
    one they keep their place in the queue."""
    moved = {"next_attempt_at": due_at} if due_at is not None else {}
    for lease_id in {item.lease_id for item in claimed}:
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_([item.id for item in claimed if item.lease_id == lease_id]),
                Delivery.lease_id == lease_id,
            )
            .values(lease_id=None, locked_until=None, **moved)
        )
