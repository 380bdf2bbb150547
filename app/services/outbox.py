"""Turn an event into a message and one pending delivery per destination (the outbox).

Called inside the transaction that changes the state the event reports, so the event exists if
and only if the change does. The deliveries are woken for after that transaction commits.

Every job's end goes through here, so it is one statement: the message, and a delivery for each
destination, chosen in Postgres (the tenant's subscribed callbacks, explicit callbacks, extra
URLs), in one round trip, and one delivery per distinct URL however many destinations name it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.announce import announce_after_commit
from app.events import render_body
from app.filters import Verdicts, event_context, skipped_by
from app.models import Callback
from app.prepared import PreparedStatement
from app.queues import wake_deliveries
from app.services.ordering import LATEST_PENDING, lock_keys
from app.tracing import current_traceparent

_PUBLISH = PreparedStatement(
    "boomerang_publish",
    text(
        """
    WITH candidate AS (
        SELECT id AS callback_id, url, 0 AS kind, created_at, 0::bigint AS n,
               -- (a callback named outright is sent whatever its filter says)
               (id = ANY(CAST(:filter_failed AS uuid[]))
                AND id <> ALL(CAST(:callback_ids AS uuid[]))) AS failed
        FROM callback
        WHERE tenant_id = :tenant_id
          AND ((:subscribers AND enabled
                AND EXISTS (SELECT 1 FROM unnest(event_types) AS pattern
                            WHERE pattern = :event_type
                               OR (pattern LIKE '%.*'
                                   AND starts_with(:event_type, left(pattern, -1))))
                -- A callback on channels hears only events on one of them.
                AND (cardinality(channels) = 0 OR channels && CAST(:channels AS varchar[]))
                -- ... and a filtered one only events its filter passes (decided beforehand).
                AND id <> ALL(CAST(:filtered_out AS uuid[]))
                AND id IS DISTINCT FROM CAST(:excluding AS uuid))
               OR id = ANY(CAST(:callback_ids AS uuid[])))
        UNION ALL
        SELECT NULL, extra.url, 1, NULL, extra.n, false
        FROM unnest(CAST(:urls AS text[])) WITH ORDINALITY AS extra(url, n)
    ), target AS (
        -- One delivery per distinct URL, however many destinations name it: the oldest
        -- callback wins, then an extra URL (a URL given on a job that a callback also has).
        SELECT DISTINCT ON (url) * FROM candidate ORDER BY url, kind, created_at, n
    ), message AS (
        INSERT INTO message (id, tenant_id, job_id, event_type, body, event_id, request_digest,
                             channels, ordering_key, traceparent)
        SELECT :message_id, :tenant_id, :job_id, :event_type, :body, :event_id, :request_digest,
               CAST(:channels AS text[]), :ordering_key, :traceparent
        WHERE :always OR EXISTS (SELECT 1 FROM target)
        -- A published event's id seen before: nothing is stored (the caller looks it up).
        ON CONFLICT (tenant_id, event_id) WHERE event_id IS NOT NULL DO NOTHING
        RETURNING id, seq
    ), made AS (
        INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status, attempt_count,
                              next_attempt_at, ordering_key, ordering_seq)
        SELECT gen_random_uuid(), :tenant_id, message.id, target.callback_id, target.url,
               CASE WHEN target.failed THEN 'cancelled' ELSE 'pending' END, 0,
               -- Parked behind the key's latest delivery to this lane while that is on its way.
               CASE WHEN target.failed THEN NULL
                    WHEN CAST(:ordering_key AS text) IS NOT NULL
                         AND coalesce(LATEST_PENDING, false)
                    THEN NULL ELSE CAST(:now AS timestamptz) END,
               CASE WHEN NOT target.failed THEN :ordering_key END,
               CASE WHEN CAST(:ordering_key AS text) IS NOT NULL AND NOT target.failed
                    THEN message.seq END
        FROM target CROSS JOIN message
        ORDER BY target.kind, target.created_at, target.n
        RETURNING id, message_id, callback_id, url, status
    ), why AS (
        -- A filter that could not decide: its delivery is written cancelled, with why as its
        -- one attempt's error, where the tenant looks (the API, the portal), not only in logs.
        INSERT INTO delivery_attempt (id, delivery_id, attempted_at, request_headers,
                                      response_body_truncated, duration_ms, succeeded, error)
        SELECT gen_random_uuid(), made.id, :now, '{}'::jsonb, false, 0, false,
               'not sent: the callback''s filter could not decide on this event: ' || failure.why
        FROM made
        JOIN unnest(CAST(:filter_failed AS uuid[]), CAST(:filter_errors AS text[]))
             AS failure(callback_id, why) ON failure.callback_id = made.callback_id
    )
    SELECT id, message_id, callback_id, url FROM made WHERE status = 'pending'
    """.replace(
            "LATEST_PENDING",
            LATEST_PENDING.format(
                lane="coalesce(target.callback_id::text, target.url)",
                key="CAST(:ordering_key AS text)",
                tenant="CAST(:tenant_id AS uuid)",
            ),
        )
    ),
)


class NewDelivery(NamedTuple):
    """A delivery the outbox made."""

    id: uuid.UUID
    message_id: uuid.UUID
    callback_id: uuid.UUID | None
    url: str


def publish(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    event_type: str,
    data: Any,
    now: datetime,
    job_id: uuid.UUID | None = None,
    callbacks: Iterable[Callback] = (),
    subscribers: bool = False,
    excluding: uuid.UUID | None = None,
    extra_urls: Iterable[str] = (),
    keep_without_deliveries: bool = True,
    message_id: uuid.UUID | None = None,
    event_id: str | None = None,
    request_digest: str | None = None,
    channels: Sequence[str] = (),
    ordering_key: str | None = None,
    callback_filters: Sequence[tuple[uuid.UUID, str]] | None = None,
) -> list[NewDelivery]:
    """Store one message and a pending delivery for each destination: the given ``callbacks``
    (enabled or not), with ``subscribers`` every enabled callback of the tenant that listens for
    ``event_type`` (but ``excluding``), and each extra URL. Without ``keep_without_deliveries``
    an event nobody is to hear is not stored at all. A published event's ``event_id`` already
    stored for the tenant stores nothing (see ``app/services/published.py``).

    Events with the same ``ordering_key`` reach each destination one at a time, in commit order
    (``app/services/ordering.py``); a job's events are keyed by the job's id unless given one.

    ``callback_filters`` are the tenant's enabled filtered callbacks as (id, filter), when this
    transaction has read them already; otherwise they are looked up."""
    session.flush()  # callbacks made in this transaction must be seen by the statement
    message_id = message_id or uuid.uuid4()
    body = render_body(event_type, data, now, ordering_key)  # a key given is a key said
    if ordering_key is None and job_id is not None:
        ordering_key = str(job_id)
    if ordering_key is not None:
        lock_keys(session, [(tenant_id, ordering_key)])
    verdicts = (
        _filter_verdicts(
            session, tenant_id, event_type, data, channels, now, message_id, callback_filters
        )
        if subscribers
        else Verdicts([], {})
    )
    rows = _PUBLISH.execute(
        session.connection(),
        {
            "tenant_id": tenant_id,
            "event_type": event_type,
            "subscribers": subscribers,
            "excluding": excluding,
            "callback_ids": [str(callback.id) for callback in callbacks],
            "urls": list(extra_urls),
            "message_id": message_id,
            "filtered_out": [str(callback_id) for callback_id in verdicts.skipped],
            "filter_failed": [str(callback_id) for callback_id in verdicts.failed],
            "filter_errors": list(verdicts.failed.values()),
            "event_id": event_id,
            "request_digest": request_digest,
            "channels": list(channels),
            "job_id": job_id,
            "body": body,
            "ordering_key": ordering_key,
            # Each attempt's span is a child of whatever raised the event (a job's run, a
            # request), in whichever delivery worker sends it.
            "traceparent": current_traceparent(),
            # A failed filter's cancelled delivery needs its message.
            "always": keep_without_deliveries or bool(verdicts.failed),
            "now": now,
        },
    ).all()
    if rows:
        wake_deliveries(session)
    if rows or keep_without_deliveries:
        announce_after_commit(session, tenant_id, job_id)
    return [NewDelivery._make(row) for row in rows]


_FILTERED = PreparedStatement(
    "boomerang_callback_filters",
    text(
        """
        SELECT id, filter FROM callback
        WHERE tenant_id = :tenant_id AND filter IS NOT NULL AND enabled
        """
    ),
)


def _filter_verdicts(
    session: Session,
    tenant_id: uuid.UUID,
    event_type: str,
    data: Any,
    channels: Sequence[str],
    now: datetime,
    message_id: uuid.UUID,
    filters: Sequence[tuple[uuid.UUID, str]] | None = None,
) -> Verdicts:
    """The tenant's filtered callbacks that do not hear this event. One indexed probe, which
    finds nothing for a tenant without filters; the rest of the routing stays in SQL."""
    if filters is None:
        found = _FILTERED.execute(session.connection(), {"tenant_id": tenant_id})
        filters = [(row.id, row.filter) for row in found]
    if not filters:
        return Verdicts([], {})
    # What the body will say, as JSON: a filter sees strings where the body has them.
    as_sent = json.loads(json.dumps(data, default=str))
    context = event_context(event_type, as_sent, list(channels), now)
    return skipped_by(list(filters), context, message_id)
