"""One Redis subscription per stream process, fanned out to the waiters in it.

Waiters wait on a job or on a tenant; an announcement (``app.announce``) wakes every waiter on
its job and tenant. Announcements are only hints: each waiter also wakes on its own timer and
re-reads Postgres, so a lost one (Redis restarting, this subscription reconnecting) costs at most
that timer's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from app import announce

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
# A quiet subscription is pinged this often; one that hears nothing back for three times as long
# is on a hung Redis (which keeps the connection open and answers nothing) and is made again.
PING_SECONDS = 5.0


class Hub:
    def __init__(self, redis_url: str, timeout_seconds: float = 0.5) -> None:
        self._redis_url = redis_url
        self._timeout_seconds = timeout_seconds
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def waiting(self, *keys: str):
        """An event set whenever something is announced for one of ``keys``."""
        event = asyncio.Event()
        for key in keys:
            self._waiters[key].add(event)
        try:
            yield event
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]

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
            client = aioredis.Redis.from_url(
                self._redis_url, socket_connect_timeout=self._timeout_seconds
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(announce.CHANNEL)
                    await self._relay(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("stream: lost the Redis subscription; retrying", exc_info=True)
                # Whatever was announced meanwhile is found by the waiters' timers.
                for waiters in list(self._waiters.values()):
                    for event in waiters:
                        event.set()
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()


def job_key(job_id: object) -> str:
    return f"job:{job_id}"


def tenant_key(tenant_id: object) -> str:
    return f"tenant:{tenant_id}"
