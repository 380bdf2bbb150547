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

from sqlalchemy.orm import Session, sessionmaker

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
        refresh_at = help_at = 0.0
        handed_over = False
        claim_failure: Exception | None = None

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
                except Exception as exc:
                    session.rollback()
                    # Record what is in flight first, then fail (a database outage retries the
                    # task): those POSTs were made, and dropping them would send them again.
                    claim_failure = exc
                    return []

            try:
                while True:
                    now = time.monotonic()
                    if now >= deadline and not handed_over:
                        # Out of time: take no more work, and let a fresh drain take what is
                        # due now rather than after this one's slowest attempts come back.
                        self._hand_over(session)
                        handed_over = True
                    if not handed_over and now >= refresh_at:
                        self.waker.draining()
                        refresh_at = now + 1.0
                    room = self.settings.delivery_concurrency - len(in_flight)
                    if room <= 0 and not handed_over and now >= help_at:
                        self.waker.ask_for_help()  # every slot busy: let an idle process in
                        help_at = now + 1.0
                    if room > 0 and not handed_over:
                        want = min(room, self.settings.delivery_batch_size)
                        claimed = claim(want)
                        launch(claimed)
                        if len(claimed) == want:
                            self.waker.ask_for_help()  # more is due than this one can take
                    if not in_flight:
                        if claim_failure is not None:
                            raise claim_failure
                        if handed_over:
                            break
                        # Nothing due, nothing in flight. Clear the key, then look once more:
                        # work committed after this look finds the key gone and sends a wake.
                        self.waker.about_to_stop()
                        last = claim(self.settings.delivery_batch_size)
                        if not last:
                            if claim_failure is not None:
                                raise claim_failure
                            break
                        self.waker.draining()
                        launch(last)
                    done, _ = wait(
                        list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED
                    )
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
            except BaseException:
                # Whatever stopped this drain, it no longer holds the key: the next wake or
                # sweep must not wait for the key to expire.
                self.waker.about_to_stop()
                raise
        return stats

    def _hand_over(self, session: Session) -> None:
        # Clear the key first, then look: work committed after the look finds the key gone and
        # sends its own wake; work committed before it is seen here and woken for.
        self.waker.about_to_stop()
        due = has_due_deliveries(session, self.clock())
        session.commit()
        if due:
            self.waker.wake()
