"""Bulk replay: re-send every finished delivery a search of the log matches.

The request stores a ``DeliveryReplay`` and answers at once; the maintenance worker then walks the
matching deliveries newest first in batches (``replay_step``), each batch one transaction that
makes its deliveries due again exactly as a manual retry does (one more attempt, same
``webhook-id``), then wakes the delivery workers. The walk remembers where it is in Postgres, so a
worker killed mid-replay costs one batch's transaction, and another worker carries on from there.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import enqueue_after_commit
from app.errors import InvalidField, NotFound
from app.models import (
    Callback,
    Delivery,
    DeliveryReplay,
    DeliveryStatus,
    Job,
    Message,
    ReplayStatus,
    Tenant,
)
from app.queues import MAINTENANCE_QUEUE, REPLAY_TASK, wake_deliveries
from app.services.deliveries import DeliverySearch, search_statement
from app.services.idempotency import check_same_request, find_by_idempotency_key
from app.services.jobs import fingerprint
from config.settings import Settings

FINISHED = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)
# How long a replay is left to the worker on it before the sweep wakes another for it: a step
# is one short transaction, so a replay untouched this long has lost its worker.
REPLAY_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class ReplayRequest:
    """What ``POST /v1/deliveries/replay`` answers: a started (or repeated) replay, or a count."""

    replay: DeliveryReplay | None
    matched: int
    created: bool


def search_to_json(search: DeliverySearch) -> dict[str, Any]:
    """The filters that were given, as JSON (the replay's stored ``search`` and its answer)."""
    out: dict[str, Any] = {}
    for name, value in asdict(search).items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID | DeliveryStatus):
            value = str(value)
        out[name] = value
    return out


def search_from_json(stored: dict[str, Any]) -> DeliverySearch:
    """The search a replay stored, read back."""
    values: dict[str, Any] = {}
    for field in fields(DeliverySearch):
        value = stored.get(field.name)
        if value is None:
            continue
        if field.name in ("callback_id", "message_id", "job_id"):
            value = uuid.UUID(value)
        elif field.name in ("since", "until"):
            value = datetime.fromisoformat(value)
        elif field.name == "status":
            value = DeliveryStatus(value)
        values[field.name] = value
    return DeliverySearch(**values)


def replayable(tenant_id: uuid.UUID, search: DeliverySearch) -> Select[Delivery]:
    """The tenant's finished deliveries matching ``search`` that may be sent again: not
    cancelled (what was withdrawn stays withdrawn) and not to a deleted callback (that would POST
    to a URL the tenant removed), as for a manual retry."""
    query = search_statement(tenant_id, search)
    if search.status is None:
        query = query.where(Delivery.status.in_(FINISHED))
    # A delivery without a callback is either ad hoc (its job's own callback_url) or one whose
    # callback was deleted; only the first may be re-sent.
    ad_hoc = exists().where(
        Message.id == Delivery.message_id,
        Job.id == Message.job_id,
        Job.callback_url == Delivery.url,
    )
    return query.where(or_(Delivery.callback_id.is_not(None), ad_hoc))


def count_replayable(session: Session, tenant: Tenant, search: DeliverySearch) -> int:
    """How many deliveries a replay of ``search`` would re-send now."""
    matching = replayable(tenant.id, search).with_only_columns(Delivery.id).subquery()
    return session.scalar(select(func.count()).select_from(matching)) or 0


def request_replay(
    session: Session,
    tenant: Tenant,
    search: DeliverySearch,
    now: datetime,
    settings: Settings,
    *,
    dry_run: bool = False,
    idempotency_key: str | None = None,
) -> ReplayRequest:
    """Start replaying what ``search`` matches (the worker does it after commit), or with
    ``dry_run`` only count it. A repeated ``idempotency_key`` answers with the first replay."""
    stored_search = search_to_json(search)
    request_fingerprint = fingerprint({"search": stored_search})
    if idempotency_key is not None and not dry_run:
        existing = find_by_idempotency_key(
            session, DeliveryReplay, tenant, idempotency_key, now, settings
        )
        if existing is not None:
            return _repeat(existing, request_fingerprint)
    matched = count_replayable(session, tenant, search)
    if dry_run:
        return ReplayRequest(replay=None, matched=matched, created=False)
    if matched > settings.replay_max_deliveries:
        raise InvalidField(
            "json",
            "since",
            f"the filter matches {matched:,} deliveries and one replay re-sends at most "
            f"{settings.replay_max_deliveries:,}: narrow it (since/until, callback_id, "
            "event_type)",
        )
    replay = DeliveryReplay(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
        search=stored_search,
        status=ReplayStatus.RUNNING,
        matched=matched,
        replayed=0,
        created_at=now,
    )
    session.add(replay)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its replay.
        existing = find_by_idempotency_key(
            session, DeliveryReplay, tenant, idempotency_key, now, settings
        )
        if existing is None:
            raise
        return _repeat(existing, request_fingerprint)
    wake_replays(session)
    return ReplayRequest(replay=replay, matched=matched, created=True)


def _repeat(replay: DeliveryReplay, request_fingerprint: str) -> ReplayRequest:
    check_same_request(replay, request_fingerprint)
    return ReplayRequest(replay=replay, matched=replay.matched, created=False)


def get_replay(session: Session, tenant: Tenant, replay_id: uuid.UUID) -> DeliveryReplay:
    """One of the tenant's replays, or 404."""
    replay = session.scalar(
        select(DeliveryReplay).where(
            DeliveryReplay.id == replay_id, DeliveryReplay.tenant_id == tenant.id
        )
    )
    if replay is None:
        raise NotFound("No such replay.")
    return replay


def wake_replays(session: Session) -> None:
    """Once this transaction commits, have a maintenance worker step through running replays."""
    enqueue_after_commit(session, REPLAY_TASK, queue=MAINTENANCE_QUEUE)


def has_stalled_replays(session: Session, now: datetime) -> bool:
    """A running replay no worker has touched within its lease (its worker died, or its wake
    was lost): the sweep wakes one."""
    return (
        session.scalar(
            select(
                exists().where(
                    DeliveryReplay.status == ReplayStatus.RUNNING,
                    or_(DeliveryReplay.leased_until.is_(None), DeliveryReplay.leased_until < now),
                )
            )
        )
        or False
    )


def replay_step(session: Session, now: datetime, settings: Settings) -> DeliveryReplay | None:
    """Re-send the next batch of one running replay; the replay, or None when none is left to
    take. The caller commits. Replays take turns: the one touched longest ago goes next, and
    one another worker is stepping through is skipped, not waited for."""
    replay = session.scalar(
        select(DeliveryReplay)
        .where(DeliveryReplay.status == ReplayStatus.RUNNING)
        .order_by(DeliveryReplay.leased_until.asc().nulls_first(), DeliveryReplay.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if replay is None:
        return None
    batch = _next_batch(session, replay, settings.replay_batch_size)
    if batch:
        _make_due(session, [row.id for row in batch], now, settings)
        replay.replayed += len(batch)
        replay.after_created_at, replay.after_id = batch[-1].created_at, batch[-1].id
        wake_deliveries(session)
    if len(batch) < settings.replay_batch_size:
        replay.status = ReplayStatus.DONE
        replay.finished_at = now
        replay.leased_until = None
    else:
        replay.leased_until = now + REPLAY_LEASE
    session.flush()
    return replay


def _next_batch(session: Session, replay: DeliveryReplay, size: int) -> list[Any]:
    # Newest first from where the walk stopped, and only what existed when it was asked for: a
    # delivery it re-sent keeps its created_at, so it is never met twice. Rows are locked in the
    # walk's order, so two writers taking the same rows queue rather than deadlock.
    query = (
        replayable(replay.tenant_id, search_from_json(replay.search))
        .where(Delivery.created_at <= replay.created_at)
        .with_only_columns(Delivery.id, Delivery.created_at)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(size)
        .with_for_update(of=Delivery)
    )
    if replay.after_created_at is not None:
        query = query.where(_before(replay.after_created_at, replay.after_id))
    return list(session.execute(query))


def _before(created_at: datetime, delivery_id: uuid.UUID | None) -> ColumnElement[bool]:
    return tuple_(Delivery.created_at, Delivery.id) < tuple_(created_at, delivery_id)


def _make_due(
    session: Session, delivery_ids: list[uuid.UUID], now: datetime, settings: Settings
) -> None:
    # As a manual retry: the last slot of the callback's schedule, so a failure ends it as
    # failed again without a new run of retries.
    own_schedule = (
        select(func.cardinality(Callback.retry_schedule))
        .where(Callback.id == Delivery.callback_id)
        .scalar_subquery()
    )
    session.execute(
        update(Delivery)
        .where(and_(Delivery.id.in_(delivery_ids), Delivery.status.in_(FINISHED)))
        .values(
            status=DeliveryStatus.PENDING,
            attempt_count=func.coalesce(own_schedule, len(settings.retry_schedule)),
            next_attempt_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
