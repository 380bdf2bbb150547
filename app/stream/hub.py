"""One Redis subscription per stream process, fanned out to the waiters in it.

Waiters wait on a job or on a tenant; an announcement (``app.announce``) wakes every waiter on
its job and tenant. Announcements are only hints, so a lost one (Redis restarting, this
subscription reconnecting, a publisher dying after its commit) must only delay a waiter. Rather
than each job waiter re-reading Postgres on a timer of its own, which with ten thousand open
streams is thousands of queries a second, the hub re-reads once for all of them: every
``recheck_seconds`` it fetches a fingerprint of each waited-on job in one query and wakes the
waiters whose job's fingerprint differs from the one they last saw. A waiter tells the hub what
it saw (``saw``) before its first read, so a change between that read and the next round is
caught too, without waking every new waiter to read again. A tenant's feed waiters are few and
keep their own short timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import redis.asyncio as aioredis

from app import announce
from app.redis_client import async_redis_client

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
JOB_PREFIX = "job:"
# A quiet subscription is pinged this often; one that hears nothing back for three times as long
# is on a hung Redis (which keeps the connection open and answers nothing) and is made again.
PING_SECONDS = 5.0

# Job id -> a digest of what a waiter on it could see change (its state and its events).
Fingerprints = Callable[[list[str]], dict[str, str]]


class Hub:
    def __init__(
        self,
        redis_url: str,
        fingerprints: Fingerprints,
        recheck_seconds: float = 5.0,
        *,
        timeout_seconds: float = 0.5,
    ) -> None:
        self._redis_url = redis_url
        self._fingerprints = fingerprints
        self._recheck_seconds = recheck_seconds
        self._timeout_seconds = timeout_seconds
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        # The fingerprint each job waiter last saw: set by ``saw``, else by the round it first
        # took part in.
        self._seen: dict[asyncio.Event, str | None] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._recheck())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.contextmanager
    def waiting(self, *keys: str):
        """An event set whenever something is announced for one of ``keys``."""
        event = asyncio.Event()
        for key in keys:
            self._waiters[key].add(event)
        try:
            yield event
        finally:
            self._seen.pop(event, None)
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]

    def saw(self, waiter: asyncio.Event, fingerprint: str | None) -> None:
        """``waiter``'s job had ``fingerprint`` before the waiter read it."""
        self._seen[waiter] = fingerprint

    async def _relay(self, pubsub: aioredis.client.PubSub) -> None:
        """Wake the waiters of each announcement until the subscription goes quiet for good."""
        loop = asyncio.get_running_loop()
        heard_at = loop.time()
        while True:
            message = await pubsub.get_message(timeout=PING_SECONDS)
            if message is not None:
                heard_at = loop.time()
                if message.get("type") == "message":
                    tenant_id, job_id = announce.parse(message["data"])
                    self._wake(f"tenant:{tenant_id}")
                    if job_id is not None:
                        self._wake(f"job:{job_id}")
            elif loop.time() - heard_at > 3 * PING_SECONDS:
                raise TimeoutError("Redis answered nothing, not even a ping")
            else:
                await pubsub.ping()

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            # Made again on every reconnect: behind Sentinel, that finds the current primary.
            client = async_redis_client(self._redis_url, self._timeout_seconds)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(announce.CHANNEL)
                    await self._relay(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Whatever is announced meanwhile is found by the recheck, without waking every
                # waiter at once.
                log.warning("stream: lost the Redis subscription; retrying", exc_info=True)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _recheck(self) -> None:
        unseen = object()
        while True:
            await asyncio.sleep(self._recheck_seconds)
            keys = [key for key in self._waiters if key.startswith(JOB_PREFIX)]
            if not keys:
                continue
            try:
                now = await asyncio.to_thread(
                    self._fingerprints, [key.removeprefix(JOB_PREFIX) for key in keys]
                )
            except Exception:
                log.warning("stream: could not recheck the waited-on jobs", exc_info=True)
                continue
            for key in keys:
                fingerprint = now.get(key.removeprefix(JOB_PREFIX))
                for waiter in tuple(self._waiters.get(key, ())):
                    seen = self._seen.get(waiter, unseen)
                    if seen is not unseen and seen != fingerprint:
                        waiter.set()
                    self._seen[waiter] = fingerprint


def job_key(job_id: object) -> str:
    return f"job:{job_id}"


def tenant_key(tenant_id: object) -> str:
    return f"tenant:{tenant_id}"
