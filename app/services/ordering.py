"""Ordered delivery per key: events that share an ordering key reach each callback one at a time,
in commit order; different keys, and different callbacks, go in parallel.

Three rules keep it, all in Postgres so they hold across processes and hosts:

- A keyed delivery is created *parked* (pending, no ``next_attempt_at``, so never due) when the
  latest delivery of its key to the same lane is still pending.
- When a keyed delivery ends (succeeded, failed for good, cancelled) the next pending one of its
  key and lane is woken. Publishing and ending take the same per-key advisory lock first, so a
  delivery parked behind one that is ending at that moment is always seen and woken: each side
  reads the other's work only after the other has committed. The lock also makes a key's
  message ``seq`` follow commit order.
- The claim never leases a keyed delivery while an earlier one of its key and lane is pending
  (``workers/delivery/store.py``), so a manual retry or a lost wake can reorder nothing. The
  sweep wakes any parked delivery nothing is ahead of.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.queues import wake_deliveries

# Whether a key's latest delivery to a lane is still on its way: then a new one parks behind it.
LATEST_PENDING = """
    (SELECT latest.status = 'pending'
     FROM delivery AS latest
     WHERE coalesce(latest.callback_id::text, latest.url) = {lane}
       AND latest.ordering_key = {key}
       AND latest.tenant_id = {tenant}
     ORDER BY latest.ordering_seq DESC
     LIMIT 1)
"""


def lock_key(tenant_id: uuid.UUID, ordering_key: str) -> int:
    """The advisory lock id of one tenant's key: 64 bits of a hash, as a signed bigint."""
    digest = hashlib.blake2b(f"{tenant_id}/{ordering_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_keys(session: Session, keys: Iterable[tuple[uuid.UUID, str]]) -> None:
    """Hold these keys until the transaction ends.

    Two transactions that share keys never wait on each other in a circle because every
    transaction takes its keys in one ascending order. Within one call they are sorted here;
    across calls it is the caller's duty: a transaction that will touch several keys takes them
    all in its first call (``publish_batch`` does). A later call that would take a key below
    one already held raises ``LockOrderError`` at once, rather than letting Postgres find the
    deadlock a second later under load."""
    ids = sorted({lock_key(tenant_id, key) for tenant_id, key in keys})
    held = _held(session)
    new = [lock_id for lock_id in ids if lock_id not in held]
    if not new:
        return
    if held and new[0] < max(held):
        raise LockOrderError(
            "ordering keys must all be taken in a transaction's first lock_keys call"
        )
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock(id) "
            "FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS lock(id, n) ORDER BY n"
        ),
        {"ids": new},
    )
    held.update(new)


class LockOrderError(RuntimeError):
    """A transaction asked for an ordering key below one it holds: it could deadlock."""


def _held(session: Session) -> set[int]:
    """The key locks this session's current transaction holds (advisory transaction locks end
    with it, so the record is kept beside the transaction object)."""
    session.connection()  # begins the transaction if nothing has yet
    transaction = session.get_transaction()
    record = session.info.get("ordering_locks")
    if record is None or record[0] is not transaction:
        record = (transaction, set())
        session.info["ordering_locks"] = record
    held: set[int] = record[1]
    return held


# For each lane and key that just ended a delivery, the earliest pending one, if it is parked.
_WAKE_NEXT = text(
    """
    WITH ended AS (
        SELECT DISTINCT tenant_id, coalesce(callback_id::text, url) AS lane, ordering_key
        FROM delivery
        WHERE id = ANY(CAST(:ids AS uuid[])) AND ordering_key IS NOT NULL AND status <> 'pending'
    ), head AS (
        SELECT (SELECT waiting.id
                FROM delivery AS waiting
                WHERE waiting.status = 'pending'
                  AND coalesce(waiting.callback_id::text, waiting.url) = ended.lane
                  AND waiting.ordering_key = ended.ordering_key
                  AND waiting.tenant_id = ended.tenant_id
                ORDER BY waiting.ordering_seq
                LIMIT 1) AS id
        FROM ended
    )
    UPDATE delivery SET next_attempt_at = :now
    FROM head
    WHERE delivery.id = head.id AND delivery.status = 'pending' AND delivery.next_attempt_at IS NULL
    RETURNING delivery.id
    """
)


def wake_next(
    session: Session,
    ended: Iterable[tuple[uuid.UUID, uuid.UUID, str | None]],
    now: datetime,
) -> int:
    """After deliveries ``(id, tenant, key)`` ended in this transaction, wake what waited behind
    them; returns how many were woken (a wake is sent after commit)."""
    keyed = [(delivery_id, tenant_id, key) for delivery_id, tenant_id, key in ended if key]
    if not keyed:
        return 0
    lock_keys(session, ((tenant_id, key) for _, tenant_id, key in keyed))
    woken = session.scalars(
        _WAKE_NEXT, {"ids": [str(delivery_id) for delivery_id, _, _ in keyed], "now": now}
    ).all()
    if woken:
        wake_deliveries(session)
    return len(woken)


# Parked deliveries nothing pending is ahead of: their wake was lost (a callback disabled and
# recovered, a delivery cancelled outside the pipeline). Oldest first, a bounded batch.
_STRANDED = text(
    """
    UPDATE delivery SET next_attempt_at = :now
    WHERE id IN (
        SELECT parked.id
        FROM delivery AS parked
        WHERE parked.status = 'pending' AND parked.next_attempt_at IS NULL
          AND parked.ordering_key IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM delivery AS ahead
              WHERE ahead.status = 'pending'
                AND coalesce(ahead.callback_id::text, ahead.url)
                    = coalesce(parked.callback_id::text, parked.url)
                AND ahead.ordering_key = parked.ordering_key
                AND ahead.tenant_id = parked.tenant_id
                AND ahead.ordering_seq < parked.ordering_seq)
        ORDER BY parked.ordering_seq
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


def wake_stranded(session: Session, now: datetime, limit: int = 1000) -> int:
    """Wake up to ``limit`` parked deliveries that wait behind nothing; how many."""
    return len(session.scalars(_STRANDED, {"now": now, "limit": limit}).all())
