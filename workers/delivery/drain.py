"""The drain: keep many delivery attempts in flight from one process, bookkept in batches.

One thread talks to Postgres and the outbound client's event loop waits on receivers. A drain
leases a batch of due deliveries, starts each POST, and every time some come back records them
all in one transaction and leases more to fill the room they left. So a slow receiver only holds
its own slots, capped per callback, while the others keep flowing; and the database sees a few
statements per batch rather than several per delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.clock import utcnow
from app.queues import LINGER_POLL_SECONDS, LINGER_SECONDS, Waker
from config.settings import Settings
from workers.delivery.ceiling import TenantCeiling
from workers.delivery.http import HttpResult, OutboundClient
from workers.delivery.lanes import (
    LaneLimits,
    split_unproven,
    unproven_in_flight,
    unproven_share,
)
from workers.delivery.pipeline import InFlight, asked_to_wait, record, start
from workers.delivery.shared_lanes import Answer, SharedLanes
from workers.delivery.store import (
    ClaimedDelivery,
    claim_deliveries,
    has_due_deliveries,
    put_back,
)

log = logging.getLogger(__name__)

# A drain gives its process back after this long (finishing what is in flight), so the other
# messages on its queues -- the sweep, more wakes -- and a warm shutdown do not wait on a burst.
DRAIN_SECONDS = 10.0
# While attempts are in flight but nothing else was due, look for new work this often.
POLL_SECONDS = 0.025
# How long the tail waits for an attempt to come back before it looks whether a drain took over.
TAIL_POLL_SECONDS = 0.2
# How often a working drain refreshes the wake key, and at most asks for help.
KEY_REFRESH_SECONDS = 1.0
# Deliveries of lanes not known to answer, over their share of the slots, keep their place in
# the queue and their lanes are left out of claims this long: a new lane may prove itself with
# its first answer, and then its deliveries go at once.
UNPROVEN_RECHECK_SECONDS = 0.1


@dataclass
class DrainStats:
    """What one drain did."""

    attempts: int = 0
    succeeded: int = 0
    batches: int = 0


class Dispatcher:
    """Drains due deliveries for one worker process.

    The attempts in flight belong to the process, not to one drain: a drain returns at its
    deadline without waiting for its slowest receivers (a hanging one would park the process for
    the whole delivery timeout), and whatever is still in flight is recorded by the next drain, or
    meanwhile by a tail thread that gives way as soon as a drain starts.
    """

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
        # Learned across this process's drains: a receiver's limit outlives one drain.
        self.lane_limits = LaneLimits(settings.callback_concurrency)
        # ... and shared with the fleet, which holds each callback to its limits as a whole.
        self.shared_lanes = SharedLanes(settings, self.lane_limits)
        self.ceiling = TenantCeiling(settings)
        self.in_flight: dict[Future[HttpResult], InFlight] = {}
        self.lanes: Counter[str] = Counter()
        # Lanes not known to answer that found their share of the slots taken, and until when
        # claims leave them out.
        self._unproven_held: dict[str, float] = {}
        # Held by whoever records what comes back: a drain, or else the tail.
        self.collecting = threading.Lock()
        self._tail: threading.Thread | None = None

    def close(self) -> None:
        """Wait for what is in flight to be recorded, then close the outbound client."""
        self.finish_tail(self.settings.delivery_lease_seconds)
        self.client.close()

    def unproven_held(self) -> list[str]:
        """Lanes not known to answer that claims leave out for now."""
        now = time.monotonic()
        for lane in [lane for lane, until in self._unproven_held.items() if until <= now]:
            del self._unproven_held[lane]
        return list(self._unproven_held)

    def hold_unproven(self, lanes: Iterable[str]) -> None:
        """Leave these lanes out of claims for a moment: their share of the slots is taken."""
        until = time.monotonic() + UNPROVEN_RECHECK_SECONDS
        for lane in lanes:
            self._unproven_held[lane] = until

    def drain(self, budget_seconds: float = DRAIN_SECONDS) -> DrainStats:
        """Send due deliveries until none are left or the budget is spent, then return."""
        with self.collecting, self.session_factory() as session:
            drain = _Drain(self, session, time.monotonic() + budget_seconds)
            try:
                drain.run()
            except BaseException:
                # Whatever stopped this drain, it no longer holds the key: the next wake or
                # sweep must not wait for the key to expire.
                self.waker.about_to_stop()
                raise
            finally:
                if self.in_flight:
                    self._start_tail()
        return drain.stats

    def record_done(self, session: Session, done: Iterable[Future[HttpResult]]) -> list[Any]:
        """Record the finished attempts among ``done`` (those not recorded already) in one
        transaction, learning from each; the records. Call with ``collecting`` held."""
        finished = [
            self.in_flight.pop(future).outcome() for future in done if future in self.in_flight
        ]
        for sent in finished:
            lane = sent.claimed.lane
            self.lanes[lane] -= 1
            if self.lanes[lane] <= 0:
                del self.lanes[lane]  # ad-hoc URLs are many; keep only lanes in flight
        records = record(session, self.settings, finished, self.clock)
        # After the attempts are recorded: a slot freed earlier could let another process send
        # a delivery whose lease this one still holds.
        self.shared_lanes.heard(
            [
                Answer(sent.claimed, sent.result, asked_to_wait(sent.result, sent.attempted_at))
                for sent in finished
            ],
            self.lanes,
        )
        for sent in finished:
            if self.lane_limits.answering(sent.claimed.lane):
                self._unproven_held.pop(sent.claimed.lane, None)  # it just proved itself
        return records

    def finish_tail(self, timeout: float) -> None:
        """Block until the attempts left in flight are recorded (a warm shutdown)."""
        tail = self._tail
        if tail is not None:
            tail.join(timeout)

    def _start_tail(self) -> None:
        if self._tail is None or not self._tail.is_alive():
            self._tail = threading.Thread(target=self._collect_tail, name="delivery-tail")
            self._tail.start()

    def _collect_tail(self) -> None:
        """Record attempts still in flight after a drain returned, until none are left."""
        try:
            with self.session_factory() as session:
                while True:
                    with self.collecting:
                        pending = list(self.in_flight)
                    if not pending:
                        return
                    done, _ = wait(pending, timeout=TAIL_POLL_SECONDS, return_when=FIRST_COMPLETED)
                    if done:
                        # Waits while a drain runs; that drain records them itself.
                        with self.collecting:
                            self.record_done(session, done)
        except Exception:
            # Left in flight, they are recorded by the next drain; if none comes before their
            # leases run out, they are sent again (the same webhook-id).
            log.exception("recording the attempts left in flight failed")


class _Drain:
    """One drain: whether it still takes work, and the wake key while it does."""

    def __init__(self, dispatcher: Dispatcher, session: Session, deadline: float) -> None:
        self.dispatcher = dispatcher
        self.settings = dispatcher.settings
        self.client = dispatcher.client
        self.waker = dispatcher.waker
        self.clock = dispatcher.clock
        self.lane_limits = dispatcher.lane_limits
        self.in_flight = dispatcher.in_flight
        self.lanes = dispatcher.lanes
        self.session = session
        self.deadline = deadline
        self.stats = DrainStats()
        self.refresh_at = self.help_at = 0.0
        self.handed_over = False
        self.claim_failure: Exception | None = None
        self.waiting_until = 0.0  # when work this drain put back (over a ceiling) comes due

    def run(self) -> None:
        while True:
            self.keep_key()
            if self.handed_over:
                return  # what is still in flight is recorded by the next drain or the tail
            self.fill()
            if self.claim_failure is not None:
                # A database outage retries the task; the tail records what is in flight.
                raise self.claim_failure
            if not self.in_flight and not self.last_look():
                return
            self.collect()

    def keep_key(self) -> None:
        """Refresh the wake key while working; at the deadline, hand over instead."""
        if self.handed_over:
            return
        now = time.monotonic()
        if now >= self.deadline:
            self.hand_over()
        elif now >= self.refresh_at:
            self.waker.draining()
            self.refresh_at = now + KEY_REFRESH_SECONDS

    def fill(self) -> None:
        """Lease as much due work as there is room for; ask for help when there is more."""
        if self.handed_over:
            return
        room = self.settings.delivery_concurrency - len(self.in_flight)
        if room <= 0:
            now = time.monotonic()
            if now >= self.help_at:
                self.waker.ask_for_help()  # every slot busy: let an idle process in
                self.help_at = now + KEY_REFRESH_SECONDS
            return
        want = min(room, self.settings.delivery_batch_size)
        claimed = self.claim(want)
        self.launch(claimed)
        if len(claimed) == want or self.saturated(claimed):
            self.waker.ask_for_help()  # more is due than this one can take

    def saturated(self, claimed: list[ClaimedDelivery]) -> bool:
        """Whether a lane just claimed for is at its limit here: more of it may be due, which
        another process can send meanwhile."""
        return any(
            self.lanes[lane] >= self.lane_limits.limit(lane) for lane in {c.lane for c in claimed}
        )

    def last_look(self) -> bool:
        """Nothing in flight: look once more for work; False when the drain is done."""
        if self.claim_failure is not None:
            raise self.claim_failure
        if self.handed_over:
            return False
        lingered = self.linger()
        if lingered:
            self.launch(lingered)
            return True
        if self.claim_failure is not None:
            raise self.claim_failure
        # Clear the key, then look once more: work committed after this look finds the key gone
        # and sends a wake.
        self.waker.about_to_stop()
        last = self.claim(self.settings.delivery_batch_size)
        if not last:
            if self.claim_failure is not None:
                raise self.claim_failure
            return False
        self.waker.draining()
        self.launch(last)
        return True

    def linger(self) -> list[ClaimedDelivery]:
        """Keep the key and look again for a moment before giving up (see LINGER_SECONDS)."""
        self.waker.draining()
        until = min(
            max(time.monotonic() + LINGER_SECONDS, self.waiting_until + LINGER_POLL_SECONDS),
            self.deadline,
        )
        while time.monotonic() < until and self.claim_failure is None:
            time.sleep(LINGER_POLL_SECONDS)
            claimed = self.claim(self.settings.delivery_batch_size)
            if claimed:
                return claimed
        return []

    def collect(self) -> None:
        """Wait briefly for attempts to come back, and record those that did in one batch."""
        done, _ = wait(list(self.in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        if not done:
            return
        records = self.dispatcher.record_done(self.session, done)
        self.stats.batches += 1
        self.stats.attempts += len(records)
        self.stats.succeeded += sum(1 for r in records if r.succeeded)

    def hand_over(self) -> None:
        """Out of time: take no more work, and let a fresh drain take what is due now rather
        than after this one's slowest attempts come back."""
        self.handed_over = True
        # Clear the key first, then look: work committed after the look finds the key gone and
        # sends its own wake; work committed before it is seen here and woken for.
        self.waker.about_to_stop()
        due = has_due_deliveries(self.session, self.clock())
        self.session.commit()
        if due:
            self.waker.wake()

    def claim(self, limit: int) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` deliveries; after a failed claim, none ever again (the drain
        then fails, leaving what is in flight to be recorded)."""
        if self.claim_failure is not None:
            return []
        counted, admission, recounted = None, None, None
        try:
            held = self.dispatcher.shared_lanes.held_lanes() + self.dispatcher.unproven_held()
            slots = self.settings.delivery_concurrency
            if unproven_in_flight(self.lanes, self.lane_limits) >= unproven_share(slots):
                # Their share is taken: claim none for the lanes that hold it.
                held += [lane for lane in self.lanes if not self.lane_limits.answering(lane)]
            claimed = claim_deliveries(
                self.session,
                self.clock(),
                self.settings,
                limit=limit,
                in_flight=self.lanes,
                lane_limits=self.lane_limits,
                held=held,
            )
            counted = self.dispatcher.ceiling.admit(claimed)
            if counted.waiting:
                self.put_back(counted.waiting, counted.due_at - time.time())
            admitted, unproven_waiting = split_unproven(
                counted.admitted, self.lanes, self.lane_limits, slots
            )
            if unproven_waiting:
                put_back(self.session, unproven_waiting)
                self.dispatcher.hold_unproven(item.lane for item in unproven_waiting)
            admission = self.dispatcher.shared_lanes.admit(admitted, self.lanes)
            if admission.wait_for_slot:
                put_back(self.session, admission.wait_for_slot)
            for seconds, items in admission.wait_seconds.items():
                self.put_back(items, seconds)
            self.session.commit()
            _count_held_back(
                tenant_ceiling=counted.waiting,
                unproven_share=unproven_waiting,
                callback_concurrency=admission.wait_for_slot,
                callback_rate=admission.waiting_for_time(),
            )
            self.dispatcher.ceiling.give_back(
                counted,
                unproven_waiting + admission.wait_for_slot + admission.waiting_for_time(),
            )
            recounted = self.dispatcher.ceiling.recount_if_late(counted, admission.admitted)
            if recounted.waiting:
                self.dispatcher.shared_lanes.release(recounted.waiting)
                self.put_back(recounted.waiting, recounted.due_at - time.time())
                self.session.commit()
                _count_held_back(tenant_ceiling=recounted.waiting)
            return recounted.admitted
        except Exception as exc:
            self.session.rollback()
            # Leased no more: what they took of their callbacks' room and their tenants' second
            # goes back rather than stay taken until it runs out.
            if admission is not None:
                self.dispatcher.shared_lanes.release(admission.admitted)
            if recounted is not None:
                self.dispatcher.ceiling.give_back(recounted, recounted.admitted)
            elif counted is not None:
                self.dispatcher.ceiling.give_back(counted, counted.admitted)
            # Those POSTs were made: they are recorded, not dropped and sent again.
            self.claim_failure = exc
            return []

    def put_back(self, items: list[ClaimedDelivery], seconds: float) -> None:
        """Release deliveries over a limit, due again in ``seconds``; and stay for them rather
        than leave them to the next sweep."""
        put_back(self.session, items, self.clock() + timedelta(seconds=seconds))
        self.waiting_until = max(self.waiting_until, time.monotonic() + seconds)

    def launch(self, claimed: list[ClaimedDelivery]) -> None:
        for item in claimed:
            attempt = start(self.client, item, self.clock)
            self.in_flight[attempt.future] = attempt
            self.lanes[item.lane] += 1


def _count_held_back(**by_reason: list[ClaimedDelivery]) -> None:
    """Count what a committed claim put back, by the limit that held it."""
    for reason, items in by_reason.items():
        metrics.deliveries_held_back(reason, len(items))
