"""The drain: keep many delivery attempts in flight from one process, bookkept in batches.

One thread talks to Postgres and the outbound client's event loop waits on receivers. The loop
leases a batch of due deliveries, starts each POST, and every time some come back records them
all in one transaction and leases more to fill the room they left. So a slow receiver only ties
up its own threads, capped per callback, while the others keep flowing; and the database sees a
few statements per batch rather than several per delivery.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.db import is_connection_error
from app.services.attempts import ClaimedDelivery, claim_deliveries, has_due_deliveries
from config.settings import Settings
from workers.delivery import InFlight, record, start, utcnow
from workers.http import HttpResult, OutboundClient
from workers.wake import Waker

log = logging.getLogger(__name__)

# A drain gives its process back after this long (finishing what is in flight), so the other
# messages on its queues -- the sweep, more wakes -- and a warm shutdown do not wait on a burst.
DRAIN_SECONDS = 10.0
# While attempts are in flight but nothing else was due, look for new work this often.
POLL_SECONDS = 0.025


@dataclass
class DrainStats:
    """What one drain did."""

    attempts: int = 0
    succeeded: int = 0
    batches: int = 0


class Dispatcher:
    """Drains due deliveries for one worker process."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        client: OutboundClient,
        waker: Waker,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.client = client
        self.waker = waker
        self.clock = clock

    def close(self) -> None:
        self.client.close()

    def drain(self, budget_seconds: float = DRAIN_SECONDS) -> DrainStats:
        """Send due deliveries until none are left or the budget is spent, then return."""
        stats = DrainStats()
        in_flight: dict[Future[HttpResult], InFlight] = {}
        lanes: Counter[str] = Counter()
        deadline = time.monotonic() + budget_seconds
        refresh_at = 0.0
        claim_failure: DBAPIError | None = None

        def launch(claimed: list[ClaimedDelivery]) -> None:
            for item in claimed:
                attempt = start(self.client, item, self.clock)
                in_flight[attempt.future] = attempt
                lanes[item.lane] += 1

        with self.session_factory() as session:

            def claim(limit: int) -> list[ClaimedDelivery]:
                nonlocal claim_failure
                if claim_failure is not None:
                    return []
                try:
                    claimed = claim_deliveries(
                        session, self.clock(), self.settings, limit=limit, in_flight=lanes
                    )
                    session.commit()
                    return claimed
                except DBAPIError as exc:
                    session.rollback()
                    if not is_connection_error(exc):
                        raise
                    # Finish what is in flight and record it first; the task retries after.
                    claim_failure = exc
                    return []

            while True:
                now = time.monotonic()
                if now >= refresh_at:
                    self.waker.draining()
                    refresh_at = now + 1.0
                room = self.settings.delivery_concurrency - len(in_flight)
                if room > 0 and now < deadline:
                    want = min(room, self.settings.delivery_batch_size)
                    claimed = claim(want)
                    launch(claimed)
                    if len(claimed) == want:
                        self.waker.ask_for_help()  # more is due than this process can take
                if not in_flight:
                    if claim_failure is not None:
                        raise claim_failure
                    if time.monotonic() >= deadline:
                        self._hand_over(session)
                        break
                    # Nothing due, nothing in flight. Clear the key, then look once more: work
                    # committed after this look will find the key gone and send its own wake.
                    self.waker.about_to_stop()
                    last = claim(self.settings.delivery_batch_size)
                    if not last:
                        break
                    self.waker.draining()
                    launch(last)
                done, _ = wait(list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                if not done:
                    continue
                finished = [in_flight[future].outcome() for future in done]
                for future in done:
                    lane = in_flight.pop(future).claimed.lane
                    lanes[lane] -= 1
                    if lanes[lane] <= 0:
                        del lanes[lane]  # ad-hoc URLs are many; keep only lanes in flight
                records = record(session, self.settings, finished, self.clock)
                stats.batches += 1
                stats.attempts += len(records)
                stats.succeeded += sum(1 for r in records if r.succeeded)
        return stats

    def _hand_over(self, session: Session) -> None:
        # The budget is spent: if work is still due, wake a fresh drain (maybe this process
        # again, after the other messages waiting on its queues).
        due = has_due_deliveries(session, self.clock())
        session.commit()
        self.waker.about_to_stop()
        if due:
            self.waker.wake()
