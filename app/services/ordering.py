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
- The ending side never waits for a key while it holds anything: it only tries the locks. A key
  a publisher holds at that moment is woken right after the commit, in a transaction of its own
  that holds nothing else while it waits, so it cannot close a circle however the publisher took
  its keys (one call per event, in any order).
- The claim never leases a keyed delivery while an earlier one of its key and lane is pending
  (``workers/delivery/store.py``), so a manual retry or a lost wake can reorder nothing. The
  sweep wakes any parked delivery nothing is ahead of.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db import after_commit
from app.prepared import PreparedStatement
from app.queues import wake_deliveries

log = logging.getLogger(__name__)

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


_LOCK_KEYS = PreparedStatement(
    "boomerang_lock_ordering_keys",
    text(
        "SELECT pg_advisory_xact_lock(id) "
        "FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS lock(id, n) ORDER BY n"
    ),
)


def lock_key(tenant_id: uuid.UUID, ordering_key: str) -> int:
    """The advisory lock id of one tenant's key: 64 bits of a hash, as a signed bigint."""
    digest = hashlib.blake2b(f"{tenant_id}/{ordering_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_keys(session: Session, keys: Iterable[tuple[uuid.UUID, str]]) -> None:
    """Hold these keys until the transaction ends, waiting for them, in one order (a transaction
    that publishes several keyed events is best to take them all in one call first, as
    ``publish_batch`` does: two publishers taking shared keys in opposite orders would wait on
    each other until Postgres aborts one)."""
    held = _held(session)
    ids = sorted({lock_key(tenant_id, key) for tenant_id, key in keys} - held)
    if ids:
        _LOCK_KEYS.execute(session.connection(), {"ids": ids})
        held.update(ids)


def note_held(session: Session, keys: Iterable[tuple[uuid.UUID, str]]) -> None:
    """Record keys this transaction has locked in a statement of its own (a job's end takes its
    job's key with the update that ends it), so that publishing asks for them no more."""
    _held(session).update(lock_key(tenant_id, key) for tenant_id, key in keys)


def _held(session: Session) -> set[int]:
    """The keys this session's transaction has taken, so that publishing each event of a batch
    costs no round trip for a key the batch took up front. Advisory transaction locks end with
    the transaction (and those taken in a savepoint that rolls back, with it), so the record is
    kept beside the innermost transaction object: a new one starts with nothing known held."""
    session.connection()  # begins the transaction if nothing has yet
    transaction = session.get_nested_transaction() or session.get_transaction()
    record = session.info.get("ordering_locks")
    if record is None or record[0] is not transaction:
        record = (transaction, set())
        session.info["ordering_locks"] = record
    held: set[int] = record[1]
    return held


_TRY_LOCK_KEYS = PreparedStatement(
    "boomerang_try_lock_ordering_keys",
    text(
        "SELECT id FROM unnest(CAST(:ids AS bigint[])) AS lock(id) "
        "WHERE pg_try_advisory_xact_lock(id)"
    ),
)


def _try_lock_keys(session: Session, ids: set[int]) -> set[int]:
    """Of these lock ids, the ones this transaction holds now, taken without waiting."""
    return set(_TRY_LOCK_KEYS.execute(session.connection(), {"ids": sorted(ids)}).scalars())


# For each lane and key that just ended a delivery, the earliest pending one, if it is parked.
_WAKE_NEXT = PreparedStatement(
    "boomerang_wake_next_deliveries",
    text(
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
    ),
)


def wake_next(
    session: Session,
    ended: Iterable[tuple[uuid.UUID, uuid.UUID, str | None]],
    now: datetime,
    keys_held: set[int] | None = None,
) -> int:
    """After deliveries ``(id, tenant, key)`` ended in this transaction, wake what waited behind
    them; returns how many were woken (a wake is sent after commit). Keys another transaction
    holds now are woken after this one commits (``_wake_when_free``). ``keys_held``: the lock ids
    an earlier statement of this transaction already tried for these keys and got (recording
    attempts tries them as it settles); without it they are tried here."""
    keyed = [(delivery_id, tenant_id, key) for delivery_id, tenant_id, key in ended if key]
    if not keyed:
        return 0
    lock_ids = {delivery_id: lock_key(tenant_id, key) for delivery_id, tenant_id, key in keyed}
    held = keys_held if keys_held is not None else _try_lock_keys(session, set(lock_ids.values()))
    contended: dict[int, list[uuid.UUID]] = defaultdict(list)
    free = []
    for delivery_id, lock_id in lock_ids.items():
        if lock_id in held:
            free.append(delivery_id)
        else:
            contended[lock_id].append(delivery_id)
    if contended:
        after_commit(session, _wake_when_free, session.get_bind(), dict(contended), now)
    return _wake(session, free, now)


def _wake(session: Session, ended: list[uuid.UUID], now: datetime) -> int:
    """Wake the next delivery behind each of these ended ones, whose keys this transaction
    holds."""
    if not ended:
        return 0
    woken = _WAKE_NEXT.execute(
        session.connection(), {"ids": [str(delivery_id) for delivery_id in ended], "now": now}
    ).all()
    if woken:
        wake_deliveries(session)
    return len(woken)


def _wake_when_free(
    bind: Engine | Connection, contended: dict[int, list[uuid.UUID]], now: datetime
) -> None:
    """Wake behind deliveries whose key a publisher held when they ended: one transaction per
    key, which waits for that publisher to commit while holding nothing. Should it fail, the
    sweep wakes what it left (``wake_stranded``)."""
    for lock_id, ended in contended.items():
        try:
            with Session(bind) as session:
                session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
                _wake(session, ended, now)
                session.commit()
        except SQLAlchemyError:
            log.warning("could not wake behind deliveries %s; the sweep will", ended, exc_info=True)


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
          -- The first pending of its key and lane, asked in ix_delivery_ordering_pending's
          -- order as the claim asks it (workers/delivery/store.py).
          AND parked.ordering_seq <= (
              SELECT ahead.ordering_seq FROM delivery AS ahead
              WHERE ahead.status = 'pending'
                AND coalesce(ahead.callback_id::text, ahead.url)
                    = coalesce(parked.callback_id::text, parked.url)
                AND ahead.ordering_key = parked.ordering_key
                AND ahead.tenant_id = parked.tenant_id
              ORDER BY coalesce(ahead.callback_id::text, ahead.url), ahead.ordering_key,
                       ahead.ordering_seq
              LIMIT 1)
        ORDER BY parked.ordering_seq
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


def wake_stranded(session: Session, now: datetime, limit: int = 1000) -> int:
    """Wake up to ``limit`` parked deliveries that wait behind nothing; how many."""
    return len(session.scalars(_STRANDED, {"now": now, "limit": limit}).all())
