"""ordering: keys x events through one callback, in order per key, with one key stuck.

Three rounds of the same events (``ordering_keys`` keys x ``ordering_events`` each, published
through the real outbox, key after key in turn, a thousand a transaction) to one callback:

1. without ordering keys: the reference, what the pipeline does when nothing is ordered;
2. with a key per sequence: what ordering costs;
3. the same, but the receiver answers 503 to one key's events for ``ordering_stuck_seconds``.

Reported per round: the time from the first commit until every (other) key's last event was
accepted, and the rate. The third round also reports when the stuck key got through and whether
any key was seen out of order: an event arriving before the previous one of its key was accepted.
The receiver is this process's own, so it can answer by key and record everything.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.clock import utcnow
from app.models import Callback
from app.services import outbox
from app.services.callbacks import create_callback
from app.services.ordering import lock_keys
from app.services.tenants import create_tenant
from bench.stack import Bench
from tests.support.processes import free_port

EVENT_TYPE = "ledger.entry"
PUBLISH_BATCH = 100  # events a transaction: the most `POST /v1/events:batch` takes
# Retries for the stuck key: often enough to get through soon after the receiver recovers.
RETRY_SCHEDULE = [1, 1, 2, 2, 3, 3, 5, 5, 5, 5] + [10] * 20


@dataclass
class Arrival:
    key: str
    n: int
    webhook_id: str
    status: int
    at: float


@dataclass
class KeyedReceiver:
    """Answers 503 to ``stuck_key``'s events until ``stuck_until``, 200 to all else; records
    every request's key, place, webhook id, answer and time."""

    port: int
    stuck_key: str | None = None
    stuck_until: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _hook(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        data = body["data"]
        status = 503 if data["key"] == self.stuck_key and time.time() < self.stuck_until else 200
        with self._lock:
            self.arrivals.append(
                Arrival(data["key"], data["n"], request.headers["webhook-id"], status, time.time())
            )
        return web.Response(status=status)

    def start(self) -> None:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._hook)
            runner = self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=512)
            self._loop.run_until_complete(site.start())
            started.set()
            self._loop.run_forever()

        threading.Thread(target=serve, daemon=True, name="keyed-receiver").start()
        started.wait(10)

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        # Close its connections before its loop stops, so nothing is left pending.
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def seen(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def reset(self, stuck_key: str | None, stuck_seconds: float) -> None:
        with self._lock:
            self.arrivals = []
        self.stuck_key = stuck_key
        self.stuck_until = time.time() + stuck_seconds


def run(bench: Bench) -> dict[str, Any]:
    keys = [f"acct-{number:04d}" for number in range(bench.sizes.ordering_keys)]
    per_key = bench.sizes.ordering_events
    stuck_seconds = bench.sizes.ordering_stuck_seconds
    receiver = KeyedReceiver(free_port())
    receiver.start()
    try:
        tenant_id, callback_id = _tenant(bench, receiver)
        unordered = _round(bench, receiver, tenant_id, callback_id, keys, per_key, None, 0, False)
        ordered = _round(bench, receiver, tenant_id, callback_id, keys, per_key, None, 0, True)
        stuck = _round(
            bench, receiver, tenant_id, callback_id, keys, per_key, keys[0], stuck_seconds, True
        )
    finally:
        receiver.stop()
    ordered["x_unordered"] = _ratio(ordered["per_second"], unordered["per_second"])
    stuck["others_x_ordered"] = _ratio(stuck["per_second"], ordered["per_second"])
    return {
        "keys": len(keys),
        "events_per_key": per_key,
        "stuck_seconds": stuck_seconds,
        "unordered": unordered,
        "ordered": ordered,
        "one_key_stuck": stuck,
    }


def _ratio(ours: float, reference: float) -> float:
    return round(ours / reference, 3) if reference else 0.0


def _tenant(bench: Bench, receiver: KeyedReceiver) -> tuple[uuid.UUID, uuid.UUID]:
    with bench.session_factory() as session:
        created = create_tenant(session, "ordering")
        callback = create_callback(
            session,
            created.tenant,
            {
                "url": receiver.url("/ledger"),
                "event_types": ["ledger.*"],
                "retry_schedule": RETRY_SCHEDULE,
            },
            bench.settings,
        )
        session.commit()
        return created.tenant.id, callback.id


def _round(
    bench: Bench,
    receiver: KeyedReceiver,
    tenant_id: uuid.UUID,
    callback_id: uuid.UUID,
    keys: list[str],
    per_key: int,
    stuck_key: str | None,
    stuck_seconds: float,
    keyed: bool,
) -> dict[str, Any]:
    total = len(keys) * per_key
    receiver.reset(stuck_key, stuck_seconds)
    started = time.time()
    plan = [(key, n) for n in range(per_key) for key in keys]
    with bench.session_factory() as session:
        callback = session.get_one(Callback, callback_id)
        for first in range(0, total, PUBLISH_BATCH):
            batch = plan[first : first + PUBLISH_BATCH]
            if keyed:  # a transaction takes all its keys at once, as publish_batch does
                lock_keys(session, {(tenant_id, key) for key, _ in batch})
            for key, n in batch:
                outbox.publish(
                    session,
                    tenant_id=tenant_id,
                    event_type=EVENT_TYPE,
                    data={"key": key, "n": n},
                    now=utcnow(),
                    callbacks=[callback],
                    ordering_key=key if keyed else None,
                )
            session.commit()
    publish_seconds = time.time() - started
    # Bounded: the stuck key needs its time, its retries' spacing, then everyone's work.
    deadline = time.time() + stuck_seconds + 120 + total / 50
    while time.time() < deadline:
        if len({a.webhook_id for a in receiver.seen() if a.status == 200}) >= total:
            break
        time.sleep(0.2)
    return _figures(receiver.seen(), started, publish_seconds, total, stuck_key, keyed)


def _figures(
    arrivals: list[Arrival],
    started: float,
    publish_seconds: float,
    total: int,
    stuck_key: str | None,
    keyed: bool,
) -> dict[str, Any]:
    by_key: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in sorted(arrivals, key=lambda a: a.at):
        by_key[arrival.key].append(arrival)
    accepted = {a.webhook_id for a in arrivals if a.status == 200}
    accepted_twice = sum(
        count - 1
        for count in _counts(a.webhook_id for a in arrivals if a.status == 200).values()
        if count > 1
    )
    out_of_order = sum(_out_of_order(seen) for seen in by_key.values()) if keyed else None
    others = [a for a in arrivals if a.key != stuck_key and a.status == 200]
    others_done = max((a.at for a in others), default=started) - started
    figures: dict[str, Any] = {
        "events": total,
        "publish_seconds": round(publish_seconds, 2),
        "seconds": round(others_done, 2),
        "per_second": round(len(others) / others_done, 1) if others_done > 0 else 0.0,
        "accepted": len(accepted),
        "lost": total - len(accepted),
        "accepted_twice": accepted_twice,
        "out_of_order": out_of_order,
        "requests": len(arrivals),
    }
    if stuck_key is not None:
        stuck = by_key.get(stuck_key, [])
        through = [a.at for a in stuck if a.status == 200]
        figures["stuck_key"] = {
            "refused": sum(1 for a in stuck if a.status != 200),
            "first_accepted_after_seconds": round(min(through) - started, 2) if through else None,
            "done_after_seconds": round(max(through) - started, 2) if through else None,
            "accepted": len({a.webhook_id for a in stuck if a.status == 200}),
        }
    return figures


def _counts(items: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return counts


def _out_of_order(seen: list[Arrival]) -> int:
    """Arrivals of a key that came before the previous event of the key was accepted (or that
    went back to an earlier event once a later one had been sent)."""
    accepted_up_to = -1
    highest_sent = -1
    wrong = 0
    for arrival in seen:
        if arrival.n > accepted_up_to + 1 or arrival.n < highest_sent:
            wrong += 1
        highest_sent = max(highest_sent, arrival.n)
        if arrival.status == 200:
            accepted_up_to = max(accepted_up_to, arrival.n)
    return wrong
