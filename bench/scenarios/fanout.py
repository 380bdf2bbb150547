"""fanout: one event to 100 callbacks, through the real outbox, with and without content filters.

The tenant has 100 callbacks subscribed to ``order.*``. E events are published one transaction
each with ``app.services.outbox.publish`` (what ``POST /v1/events`` and every job's end run):
first with no callback filtered, then with each callback carrying a CEL filter that about half
the events pass. Reported: publish time per event (p50/p99) in both rounds, the deliveries each
round made, and what one filter costs on one event (timed apart from the rest). The deliveries
made are cancelled, not sent: this measures the fan-out, the throughput scenario sending.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import update

from app.clock import utcnow
from app.filters import event_context, skipped_by
from app.models import Callback, Tenant
from app.services import outbox
from bench.figures import ms, percentile
from bench.stack import Bench

CALLBACKS = 100
# Passes for about half the events: amounts run 0..199.
FILTER = 'data.amount >= 100 && data.currency == "EUR"'


def run(bench: Bench) -> dict[str, Any]:
    events = bench.sizes.fanout_events
    tenant_id = _tenant_with_callbacks(bench)
    plain = _publish_round(bench, tenant_id, events)
    with bench.session_factory() as session:
        session.execute(
            update(Callback).where(Callback.tenant_id == tenant_id).values(filter=FILTER)
        )
        session.commit()
    filtered = _publish_round(bench, tenant_id, events)
    cancel_pending(bench, tenant_id)
    return {
        "callbacks": CALLBACKS,
        "events": events,
        "filter": FILTER,
        "unfiltered": plain,
        "filtered": filtered,
        "evaluation_us_per_filter": _evaluation_cost(events),
    }


def _evaluation_cost(events: int) -> float:
    """Microseconds one filter takes on one event, as the outbox runs it (compiled once)."""
    filters = [(number, FILTER) for number in range(CALLBACKS)]
    contexts = [
        event_context("order.placed", {"amount": n % 200, "currency": "EUR"}, [], utcnow())
        for n in range(max(events, 1))
    ]
    started = time.perf_counter()
    for context in contexts:
        skipped_by(filters, context, None)
    return round((time.perf_counter() - started) / (len(contexts) * CALLBACKS) * 1e6, 2)


def _tenant_with_callbacks(bench: Bench) -> uuid.UUID:
    with bench.session_factory() as session:
        tenant = Tenant(name="fanout", signing_secret="whsec_" + "A" * 32)
        session.add(tenant)
        session.flush()
        for number in range(CALLBACKS):
            session.add(
                Callback(
                    tenant_id=tenant.id,
                    url=bench.receiver.url(f"/fast/fanout-{number}"),
                    event_types=["order.*"],
                    secret="whsec_" + "B" * 32,
                )
            )
        session.commit()
        return tenant.id


def _publish_round(bench: Bench, tenant_id: uuid.UUID, events: int) -> dict[str, Any]:
    seconds: list[float] = []
    made = 0
    with bench.session_factory() as session:
        for number in range(events):
            started = time.perf_counter()
            made += len(
                outbox.publish(
                    session,
                    tenant_id=tenant_id,
                    event_type="order.placed",
                    data={"amount": number % 200, "currency": "EUR", "n": number},
                    now=utcnow(),
                    subscribers=True,
                )
            )
            session.commit()
            seconds.append(time.perf_counter() - started)
    cancel_pending(bench, tenant_id)
    return {
        "p50_ms": ms(percentile(seconds, 0.5)),
        "p99_ms": ms(percentile(seconds, 0.99)),
        "deliveries_made": made,
        "deliveries_per_event": round(made / events, 1) if events else 0,
    }


_CANCEL_PENDING = """
UPDATE delivery SET status = 'cancelled', next_attempt_at = NULL
WHERE id IN (SELECT id FROM delivery WHERE tenant_id = :t AND status = 'pending'
             FOR UPDATE SKIP LOCKED)
"""


def cancel_pending(bench: Bench, tenant_id: uuid.UUID) -> None:
    """Cancel what the round left pending (nobody listens at those URLs). The workers may be
    settling some of it at that moment: rows they hold are skipped rather than waited for (a
    bulk UPDATE waiting on them while they wait on its rows is a deadlock), and taken on a later
    pass, a bounded number of them."""
    for _ in range(100):
        bench.sql(_CANCEL_PENDING, t=tenant_id)
        left = bench.sql(
            "SELECT count(*) FROM delivery WHERE tenant_id = :t AND status = 'pending'",
            t=tenant_id,
        )[0][0]
        if not left:
            return
        time.sleep(0.05)
