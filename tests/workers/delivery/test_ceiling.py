"""The ceiling on one tenant's outbound attempts per second: counted in real Redis, the excess
waits for the next second, nothing is dropped, and other tenants are not held back."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import Counter

import redis
from sqlalchemy import select

from app.models import Delivery, DeliveryAttempt
from tests.factories import claimed_delivery, make_callback, make_delivery, make_tenant
from workers.delivery.ceiling import KEY_PREFIX, TenantCeiling
from workers.delivery.drain import Dispatcher, _Drain
from workers.delivery.http import OutboundClient
from workers.delivery.lanes import LaneLimits
from workers.delivery.shared_lanes import SharedLanes


def test_a_tenant_over_its_ceiling_is_shaped_per_second_and_others_are_not(
    db_session, settings, tenant, receiver, wakes
):
    ceiling = settings.replace(tenant_attempts_per_second=5)
    loud = make_callback(db_session, tenant.row, receiver.url("/loud"))
    other, _ = make_tenant(db_session, "quiet")
    quiet = make_callback(db_session, other, receiver.url("/quiet"))
    for _ in range(12):
        make_delivery(db_session, loud)
    for _ in range(3):
        make_delivery(db_session, quiet)
    db_session.commit()
    drain = Dispatcher(
        ceiling, lambda: contextlib.nullcontext(db_session), OutboundClient(ceiling), wakes[0]
    )
    try:
        drain.drain(budget_seconds=8)
    finally:
        drain.close()
    loud_arrivals = [request.at for request in receiver.received("/loud")]
    assert len(loud_arrivals) == 12  # every one, later, none dropped
    # The ceiling governs when attempts start: at most 5 in any one second.
    per_second = attempts_started_per_second(db_session, loud.id)
    assert sum(per_second.values()) == 12
    assert max(per_second.values()) <= 5
    assert len(per_second) >= 3
    quiet_arrivals = [request.at for request in receiver.received("/quiet")]
    assert len(quiet_arrivals) == 3
    assert max(quiet_arrivals) < min(loud_arrivals) + 1  # not queued behind the loud tenant


def attempts_started_per_second(db_session, callback_id: uuid.UUID) -> Counter[int]:
    """How many of the callback's logged attempts started in each second."""
    started = db_session.scalars(
        select(DeliveryAttempt.attempted_at)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(Delivery.callback_id == callback_id)
    ).all()
    return Counter(math.floor(at.timestamp()) for at in started)


def counted_this_second(settings, tenant_id: uuid.UUID) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    return sum(int(client.get(key)) for key in client.scan_iter(f"{KEY_PREFIX}:{tenant_id}:*"))


def test_the_ceiling_counts_only_what_it_admits_and_takes_back_what_did_not_go(settings):
    ceiling = TenantCeiling(
        settings.replace(tenant_attempts_per_second=5), clock=lambda: 1_900_000_000.25
    )
    tenant_id = uuid.uuid4()
    first = ceiling.admit([claimed_delivery(tenant_id=tenant_id) for _ in range(8)])
    assert (len(first.admitted), len(first.waiting)) == (5, 3)
    assert counted_this_second(settings, tenant_id) == 5  # the 3 refused are not counted
    assert ceiling.admit([claimed_delivery(tenant_id=tenant_id)]).admitted == []
    # Two of the admitted found their callback full and went back to the queue.
    ceiling.give_back(first, first.admitted[:2])
    assert counted_this_second(settings, tenant_id) == 3
    assert (
        len(ceiling.admit([claimed_delivery(tenant_id=tenant_id) for _ in range(4)]).admitted) == 2
    )


def test_attempts_whose_second_ends_before_they_start_are_counted_again_in_the_next(settings):
    now = [1_900_000_000.98]
    ceiling = TenantCeiling(settings.replace(tenant_attempts_per_second=5), clock=lambda: now[0])
    tenant_id = uuid.uuid4()
    late = ceiling.admit([claimed_delivery(tenant_id=tenant_id) for _ in range(4)])
    # Still their second: they go as counted.
    assert ceiling.recount_if_late(late, late.admitted).admitted == late.admitted
    now[0] += 0.04  # the claim finished in the next second, where 3 have started already
    assert (
        len(ceiling.admit([claimed_delivery(tenant_id=tenant_id) for _ in range(3)]).admitted) == 3
    )
    recounted = ceiling.recount_if_late(late, late.admitted)
    assert (len(recounted.admitted), len(recounted.waiting)) == (2, 2)
    assert recounted.second == 1_900_000_001
    assert recounted.due_at == 1_900_000_002


def test_a_claim_slow_to_finish_does_not_start_two_seconds_of_attempts_in_one(
    db_session, settings, tenant, receiver, wakes
):
    ceiling = settings.replace(tenant_attempts_per_second=5)
    callback = make_callback(db_session, tenant.row, receiver.url("/slow-claim"))
    for _ in range(12):
        make_delivery(db_session, callback)
    db_session.commit()
    dispatcher = Dispatcher(
        ceiling, lambda: contextlib.nullcontext(db_session), OutboundClient(ceiling), wakes[0]
    )
    admit = dispatcher.shared_lanes.admit
    slowed = []

    def admit_into_the_next_second(claimed, lanes):
        # The first claim, counted in one second, finishes just after it ends.
        if not slowed:
            slowed.append(time.time())
            time.sleep(math.floor(slowed[0]) + 1.02 - time.time())
        return admit(claimed, lanes)

    dispatcher.shared_lanes.admit = admit_into_the_next_second
    try:
        dispatcher.drain(budget_seconds=8)
    finally:
        dispatcher.close()
    per_second = attempts_started_per_second(db_session, callback.id)
    assert sum(per_second.values()) == 12
    assert max(per_second.values()) <= 5
    assert len(receiver.received("/slow-claim")) == 12


def test_a_claim_its_callbacks_limit_puts_back_does_not_spend_the_tenants_second(
    db_session, settings, tenant, receiver, wakes
):
    ceiling = settings.replace(tenant_attempts_per_second=5)
    callback = make_callback(db_session, tenant.row, receiver.url("/full"), max_concurrency=2)
    for _ in range(3):
        make_delivery(db_session, callback)
    db_session.commit()
    # Another process holds both of the callback's slots.
    elsewhere = SharedLanes(ceiling, LaneLimits(ceiling.callback_concurrency))
    held = [
        claimed_delivery(callback.id, tenant_id=tenant.row.id, max_concurrency=2) for _ in range(2)
    ]
    assert elsewhere.admit(held).admitted == held
    dispatcher = Dispatcher(
        ceiling, lambda: contextlib.nullcontext(db_session), OutboundClient(ceiling), wakes[0]
    )
    try:
        with dispatcher.collecting:
            sent = _Drain(dispatcher, db_session, time.monotonic() + 5).claim(10)
    finally:
        dispatcher.close()
    assert sent == []
    assert counted_this_second(settings, tenant.row.id) == 0
    assert receiver.received("/full") == []
