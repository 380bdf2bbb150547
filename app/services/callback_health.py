"""A callback's health: its failure streak, the incidents it raises, and disabling it.

An incident starts with a callback's first failed attempt and ends with its next success.
``callback.failing`` goes out once the incident has lasted ``callback_failing_after_seconds``,
``callback.recovered`` at its end, and ``callback.disabled`` once it has lasted
``callback_disable_after_seconds``; each once per incident however many deliveries and workers
it spans. What happens is decided by ``fold_outcomes``, a pure function; ``note_attempt_outcomes``
reads and writes the row around it under a lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app import events, metrics
from app.db import after_commit
from app.models import Callback
from app.services import outbox
from config.settings import Settings


@dataclass(frozen=True)
class Health:
    """The part of a callback row the incident machine reads and writes."""

    callback_id: uuid.UUID
    url: str
    enabled: bool
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    failing_reported_at: datetime | None = None


@dataclass(frozen=True)
class Thresholds:
    """How long a callback may fail before it is announced as failing, and then disabled."""

    failing_after: timedelta
    disable_after: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Thresholds:
        return cls(
            failing_after=timedelta(seconds=settings.callback_failing_after_seconds),
            disable_after=timedelta(seconds=settings.callback_disable_after_seconds),
        )


@dataclass(frozen=True)
class Raised:
    """An event the outcomes raised: its type and its ``data`` (for ``callback.disabled``, the
    reason, which ``disable_callback`` turns into the event)."""

    event_type: str
    detail: Any


def fold_outcomes(
    health: Health, outcomes: Sequence[bool], now: datetime, thresholds: Thresholds
) -> tuple[Health, list[Raised]]:
    """Apply attempt outcomes, in order, as of ``now``: the new health and what it raised."""
    raised: list[Raised] = []
    for succeeded in outcomes:
        if succeeded:
            if health.failing_reported_at is not None and health.failing_since is not None:
                incident = _incident(health) | {"recovered_at": now.isoformat()}
                raised.append(Raised(events.CALLBACK_RECOVERED, incident))
            health = replace(
                health, consecutive_failures=0, failing_since=None, failing_reported_at=None
            )
            continue
        health = replace(
            health,
            consecutive_failures=health.consecutive_failures + 1,
            failing_since=health.failing_since or now,
        )
        since = health.failing_since or now
        if (
            health.enabled
            and health.failing_reported_at is None
            and since <= now - thresholds.failing_after
        ):
            health = replace(health, failing_reported_at=now)
            raised.append(Raised(events.CALLBACK_FAILING, _incident(health)))
        if health.enabled and since <= now - thresholds.disable_after:
            health = replace(health, enabled=False)
            reason = (
                f"{health.consecutive_failures} failed attempts in a row since "
                f"{since.isoformat()} with no success"
            )
            raised.append(Raised(events.CALLBACK_DISABLED, reason))
    return health, raised


def _incident(health: Health) -> dict[str, Any]:
    """What ``callback.failing`` and ``callback.recovered`` say about the incident."""
    return {
        "callback_id": str(health.callback_id),
        "url": health.url,
        "failing_since": health.failing_since.isoformat() if health.failing_since else None,
        "failed_attempts": health.consecutive_failures,
    }


def note_attempt_outcomes(
    session: Session,
    callback_id: uuid.UUID,
    outcomes: Sequence[bool],
    now: datetime,
    settings: Settings,
    last_failure: dict[str, Any] | None = None,
) -> None:
    """Apply a batch of one callback's attempt outcomes, in order, as of ``now``.
    ``last_failure`` (the cause class and last response of its latest failed attempt) goes into
    ``callback.failing`` and ``callback.disabled``.

    Two statements whatever the batch size (plus the events raised); a healthy callback's
    successes cost one SELECT and take no lock.
    """
    if not outcomes:
        return
    query = select(
        Callback.tenant_id,
        Callback.url,
        Callback.enabled,
        Callback.consecutive_failures,
        Callback.failing_since,
        Callback.failing_reported_at,
    ).where(Callback.id == callback_id)
    if all(outcomes):
        # Matches no row while the callback is healthy, so the common case takes no row lock.
        query = query.where(
            or_(Callback.consecutive_failures > 0, Callback.failing_reported_at.is_not(None))
        )
    # The row lock queues concurrent workers' batches for this callback, and each one then reads
    # what the one before it committed: exactly one of them sees a transition and announces it.
    # NO KEY UPDATE (key_share), as a plain UPDATE takes: new deliveries referencing this callback
    # need not wait for it, and two callbacks telling each other cannot deadlock on those keys.
    row = session.execute(query.with_for_update(key_share=True)).one_or_none()
    if row is None:
        return
    before = Health(
        callback_id=callback_id,
        url=row.url,
        enabled=row.enabled,
        consecutive_failures=row.consecutive_failures,
        failing_since=row.failing_since,
        failing_reported_at=row.failing_reported_at,
    )
    after, raised = fold_outcomes(before, outcomes, now, Thresholds.of(settings))
    session.execute(
        update(Callback)
        .where(Callback.id == callback_id)
        .values(
            consecutive_failures=after.consecutive_failures,
            failing_since=after.failing_since,
            failing_reported_at=after.failing_reported_at,
        )
    )
    for event in raised:
        if event.event_type == events.CALLBACK_DISABLED:
            disable_callback(session, callback_id, event.detail, now, last_failure)
        else:
            detail = event.detail
            if event.event_type == events.CALLBACK_FAILING and last_failure:
                detail = {**detail, **last_failure}
            tell_other_callbacks(session, row.tenant_id, callback_id, event.event_type, detail, now)


def disable_callback(
    session: Session,
    callback_id: uuid.UUID,
    reason: str,
    now: datetime,
    last_failure: dict[str, Any] | None = None,
) -> Callback | None:
    """Stop sending to a callback and tell the tenant's other callbacks (``callback.disabled``,
    with ``last_failure``'s cause class and last response when a failure led to it)."""
    callback = session.scalar(select(Callback).where(Callback.id == callback_id).with_for_update())
    if callback is None or not callback.enabled:
        return None
    callback.enabled = False
    callback.disabled_reason = reason
    after_commit(session, metrics.callback_disabled)
    session.flush()
    data = {
        "callback_id": str(callback.id),
        "url": callback.url,
        "reason": reason,
        "disabled_at": now.isoformat(),
        **(last_failure or {}),
    }
    tell_other_callbacks(
        session, callback.tenant_id, callback.id, events.CALLBACK_DISABLED, data, now
    )
    return callback


def tell_other_callbacks(
    session: Session,
    tenant_id: uuid.UUID,
    about: uuid.UUID | None,
    event_type: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """Publish an event about one callback to the tenant's other callbacks that subscribe to it
    (never to the callback itself: it is the one in trouble). ``about`` is None for an ad-hoc
    URL: then every subscriber hears it."""
    outbox.publish(
        session,
        tenant_id=tenant_id,
        event_type=event_type,
        data=data,
        now=now,
        subscribers=True,
        excluding=about,
        keep_without_deliveries=False,
    )
