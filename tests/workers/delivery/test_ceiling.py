"""The ceiling on one tenant's outbound attempts per second: counted in real Redis, the excess
waits for the next second, nothing is dropped, and other tenants are not held back."""

from __future__ import annotations

import contextlib
import math
from collections import Counter

from sqlalchemy import select

from app.models import Delivery, DeliveryAttempt
from tests.factories import make_callback, make_delivery, make_tenant
from workers.delivery.drain import Dispatcher
from workers.delivery.http import OutboundClient


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
    started = db_session.scalars(
        select(DeliveryAttempt.attempted_at)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(Delivery.callback_id == loud.id)
    ).all()
    per_second = Counter(math.floor(at.timestamp()) for at in started)
    assert sum(per_second.values()) == 12
    assert max(per_second.values()) <= 5
    assert len(per_second) >= 3
    quiet_arrivals = [request.at for request in receiver.received("/quiet")]
    assert len(quiet_arrivals) == 3
    assert max(quiet_arrivals) < min(loud_arrivals) + 1  # not queued behind the loud tenant
