"""One delivery at a time, through the same steps a drain takes for a batch; for tests only."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from app.clock import utcnow
from config.settings import Settings
from workers.delivery.http import HttpResult, OutboundClient
from workers.delivery.pipeline import Sent, record, start
from workers.delivery.store import ClaimedDelivery, claim_deliveries


def post(client: OutboundClient, url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
    """POST once through the outbound client and wait for the outcome."""
    return client.submit(url, body, headers).result()


def send(
    client: OutboundClient, claimed: ClaimedDelivery, clock: Callable[[], datetime] = utcnow
) -> Sent:
    """POST one claimed delivery and wait for it; never raises, as in a drain."""
    in_flight = start(client, claimed, clock)
    concurrent.futures.wait([in_flight.future])
    return in_flight.outcome()


def deliver(
    session: Session,
    client: OutboundClient,
    settings: Settings,
    delivery_id: uuid.UUID,
    clock: Callable[[], datetime] = utcnow,
) -> bool | None:
    """Make one attempt at one delivery: True or False for the outcome, None if it was not ours
    to send (not due, not pending, held)."""
    claimed = claim_deliveries(session, clock(), settings, limit=1, only=[delivery_id])
    session.commit()
    if not claimed:
        return None
    (outcome,) = record(session, settings, [send(client, claimed[0], clock)], clock)
    return outcome.succeeded
