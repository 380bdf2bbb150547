"""The drain: many attempts in flight from one process, against a real local receiver."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import metrics
from app.clock import utcnow
from app.models import Delivery, DeliveryAttempt, DeliveryStatus
from tests.factories import make_callback, make_delivery
from workers.delivery.drain import Dispatcher
from workers.delivery.http import OutboundClient
from workers.delivery.retry import MAX_RETRY_AFTER_SECONDS


def dispatcher(db_session, settings, waker, **changes) -> Dispatcher:
    tuned = settings.replace(**changes)
    client = OutboundClient(tuned, pool_size=tuned.delivery_concurrency)
    return Dispatcher(tuned, lambda: contextlib.nullcontext(db_session), client, waker)


def test_a_drain_sends_every_due_delivery_once_and_logs_each_attempt(
    db_session, settings, tenant, receiver, wakes
):
    callback = make_callback(db_session, tenant.row, receiver.url("/hook"))
    made = [make_delivery(db_session, callback) for _ in range(25)]
    db_session.commit()
    drain = dispatcher(
        db_session, settings, wakes[0], delivery_concurrency=8, delivery_batch_size=5
    )
    try:
        stats = drain.drain()
    finally:
        drain.close()
    assert (stats.attempts, stats.succeeded) == (25, 25)
    ids = [r.headers["webhook-id"] for r in receiver.received("/hook")]
    assert len(ids) == len(set(ids)) == 25
    db_session.expire_all()
    statuses = db_session.scalars(
        select(Delivery.status).where(Delivery.id.in_([d.id for d in made]))
    ).all()
    assert set(statuses) == {DeliveryStatus.SUCCEEDED}
    logged = db_session.scalar(
        select(func.count())
        .select_from(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id.in_([d.id for d in made]))
    )
    assert logged == 25


def held_back(reason: str) -> float:
    """This process's count of deliveries put back for ``reason``."""
    for family in metrics.process_metrics().collect():
        for sample in family.samples:
            if sample.name.endswith("held_back_total") and sample.labels["reason"] == reason:
                return sample.value
    return 0.0


def test_deliveries_a_callbacks_limit_holds_back_are_counted_and_still_each_sent_once(
    db_session, settings, tenant, receiver, wakes
):
    callback = make_callback(db_session, tenant.row, receiver.url("/hook"), max_concurrency=2)
    for _ in range(6):
        make_delivery(db_session, callback)
    db_session.commit()
    before = held_back("callback_concurrency")
    drain = dispatcher(db_session, settings, wakes[0])
    try:
        stats = drain.drain()
    finally:
        drain.close()
    assert stats.succeeded == 6
    ids = [r.headers["webhook-id"] for r in receiver.received("/hook")]
    assert len(ids) == len(set(ids)) == 6
    # The first claim leases all six (a new callback's first guess is 8); the fleet's limit lets
    # two go and the other four go back, counted.
    assert held_back("callback_concurrency") - before >= 4


def test_a_hanging_callback_holds_only_its_cap_while_the_others_flow(
    db_session, settings, tenant, receiver, wakes
):
    # Each hanging request holds its slot for the read timeout, 3 s here: time enough for the
    # healthy deliveries to go two by two on a busy host.
    receiver.answer("/hang", 200, delay_seconds=5)
    hanging = make_callback(db_session, tenant.row, receiver.url("/hang"))
    healthy = make_callback(db_session, tenant.row, receiver.url("/ok"))
    for _ in range(4):
        make_delivery(db_session, hanging)  # due first
    for _ in range(6):
        make_delivery(db_session, healthy)
    db_session.commit()
    drain = dispatcher(
        db_session,
        settings,
        wakes[0],
        delivery_concurrency=4,
        callback_concurrency=2,
        read_timeout_seconds=3,
    )
    try:
        stats = drain.drain()
    finally:
        drain.close()
    assert stats.succeeded == 6
    hang = sorted(r.at for r in receiver.received("/hang"))
    ok = [r.at for r in receiver.received("/ok")]
    assert len(ok) == 6 and len(hang) >= 4
    # Only two hanging requests at a time: the third waits for one to time out, and by then
    # every healthy delivery has arrived.
    assert max(ok) < hang[2]


def test_many_hanging_callbacks_cannot_take_the_slots_of_one_that_answers(
    db_session, settings, tenant, receiver, wakes
):
    healthy = make_callback(db_session, tenant.row, receiver.url("/ok"))
    make_delivery(db_session, healthy)
    db_session.commit()
    drain = dispatcher(
        db_session,
        settings,
        wakes[0],
        delivery_concurrency=8,
        callback_concurrency=2,
        read_timeout_seconds=3,
    )
    try:
        drain.drain()  # the healthy callback has answered this process once
        for number in range(6):
            receiver.answer(f"/hang/{number}", 200, delay_seconds=5)
            hanging = make_callback(db_session, tenant.row, receiver.url(f"/hang/{number}"))
            for _ in range(2):
                make_delivery(db_session, hanging)  # due first
        for _ in range(6):
            make_delivery(db_session, healthy)
        db_session.commit()
        drain.drain(budget_seconds=3)
    finally:
        drain.close()
    hang = sorted(r.at for r in receiver.received() if r.path.startswith("/hang/"))
    ok = sorted(r.at for r in receiver.received("/ok"))
    first_timeout = hang[0] + 3
    # Twelve hanging deliveries could fill all eight slots until they time out (3 s here). New
    # receivers share half the slots and probe a few more: six went, and two slots stayed free.
    assert len([at for at in hang if at < first_timeout]) == 6
    assert len(ok) == 7 and ok[-1] < first_timeout


def test_a_receiver_asking_for_an_endless_pause_gets_the_capped_one_and_the_drain_goes_on(
    db_session, settings, tenant, receiver, wakes
):
    # 400 digits: float() makes that infinite, and the pause the fleet shares for the callback
    # then put its other deliveries back at a date no datetime holds, failing the drain.
    receiver.answer("/busy", 429, headers={"Retry-After": "9" * 400})
    callback = make_callback(db_session, tenant.row, receiver.url("/busy"))
    first, second = make_delivery(db_session, callback), make_delivery(db_session, callback)
    db_session.commit()
    drain = dispatcher(
        db_session, settings, wakes[0], delivery_concurrency=1, delivery_batch_size=1
    )
    started = utcnow()
    try:
        stats = drain.drain(budget_seconds=5)
    finally:
        drain.close()
    assert stats.attempts == 1
    assert len(receiver.received("/busy")) == 1
    db_session.expire_all()
    latest = started + timedelta(seconds=MAX_RETRY_AFTER_SECONDS + 60)
    for delivery in (db_session.get(Delivery, first.id), db_session.get(Delivery, second.id)):
        assert delivery is not None and delivery.status is DeliveryStatus.PENDING
        assert started + timedelta(hours=23) < delivery.next_attempt_at < latest


def test_a_drain_out_of_time_leaves_the_work_to_a_new_wake(
    db_session, settings, tenant, receiver, wakes
):
    waker, sent = wakes
    callback = make_callback(db_session, tenant.row, receiver.url("/hook"))
    make_delivery(db_session, callback)
    db_session.commit()
    drain = dispatcher(db_session, settings, waker)
    try:
        stats = drain.drain(budget_seconds=0)
    finally:
        drain.close()
    assert stats.attempts == 0
    assert receiver.received("/hook") == []
    assert sent == ["wake"]


def test_a_drain_that_fails_lets_go_of_the_wake_key(
    db_session, settings, tenant, receiver, wakes, monkeypatch
):
    import redis

    from app.queues import DELIVERY_WAKE
    from workers.delivery import drain as dispatch

    waker, _ = wakes
    callback = make_callback(db_session, tenant.row, receiver.url("/hook"))
    make_delivery(db_session, callback)
    db_session.commit()

    def broken_claim(*_args, **_kwargs):
        raise RuntimeError("a bug in the claim")

    monkeypatch.setattr(dispatch, "claim_deliveries", broken_claim)
    drain = dispatcher(db_session, settings, waker)
    try:
        with pytest.raises(RuntimeError):
            drain.drain()
    finally:
        drain.close()
    # Held, the key would stop every wake and sweep until it expired.
    assert redis.Redis.from_url(settings.redis_url).exists(DELIVERY_WAKE.draining) == 0


def test_a_claim_that_fails_to_commit_gives_back_its_callbacks_room(
    db_session, settings, tenant, receiver, wakes, monkeypatch
):
    import redis
    from sqlalchemy.exc import OperationalError

    from workers.delivery.shared_lanes import lane_keys

    callback = make_callback(db_session, tenant.row, receiver.url("/hook"))
    for _ in range(3):
        make_delivery(db_session, callback)
    db_session.commit()

    def lost_connection():
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(db_session, "commit", lost_connection)
    drain = dispatcher(db_session, settings, wakes[0])
    try:
        with pytest.raises(OperationalError):
            drain.drain()
    finally:
        monkeypatch.undo()
        drain.close()
    assert receiver.received("/hook") == []
    # Admitted and then not sent: held, these slots would keep the callback's room taken across
    # the fleet until their leases ran out.
    _, busy, _ = lane_keys(str(callback.id))
    assert redis.Redis.from_url(settings.redis_url).zcard(busy) == 0


def test_a_drain_out_of_time_returns_without_waiting_for_a_slow_receiver_and_its_attempt_is_still_logged_once(  # noqa: E501 (a sentence)
    db_session, settings, tenant, receiver, wakes
):
    import time

    # Timeouts above the delay, so the attempt succeeds; the delay far above the budget, so a
    # drain that waited for the answer could not return in time on a busy host either.
    receiver.answer("/slow", 200, delay_seconds=3)
    callback = make_callback(db_session, tenant.row, receiver.url("/slow"))
    delivery = make_delivery(db_session, callback)
    db_session.commit()
    drain = dispatcher(
        db_session, settings, wakes[0], read_timeout_seconds=5, total_timeout_seconds=6
    )
    try:
        started = time.monotonic()
        drain.drain(budget_seconds=0.2)
        # The process is free before the receiver answers...
        assert time.monotonic() - started < 2.0
        assert not [r for r in receiver.received("/slow") if r.answered_at]
        assert drain.in_flight
        # ...and what was in flight is recorded by the tail once it comes back.
        drain.finish_tail(10)
    finally:
        drain.close()
    db_session.expire_all()
    assert db_session.get(Delivery, delivery.id).status == DeliveryStatus.SUCCEEDED
    attempts = db_session.scalar(
        select(func.count())
        .select_from(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery.id)
    )
    assert attempts == 1
    assert len(receiver.received("/slow")) == 1
