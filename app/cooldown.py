"""Redis clients that give up fast, and a cooldown that stops a process asking a failing Redis.

A Redis that is down refuses connections at once, but a hung one (stopped, partitioned, paging)
accepts them and never answers. Every client the web and stream processes use is built here with
connect and read timeouts of ``BOOMERANG_REDIS_TIMEOUT_SECONDS`` and no retries, and after one
failure the process rests for ``REST_SECONDS`` before it asks Redis again, so each request does
not pay the timeout. Nothing is lost meanwhile: Postgres holds the work and the sweep wakes
workers for it once Redis answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from app.redis_client import redis_client

log = logging.getLogger(__name__)

# Long enough that a burst of requests pays the timeout once, short enough that a Redis back
# from a hang is used again within seconds.
REST_SECONDS = 5.0


def quick_redis(url: str, timeout_seconds: float) -> redis.Redis:
    """A client whose connects and commands each give up after ``timeout_seconds``, once.

    One server or the primary Sentinel names, as ``url`` says (``app/redis_client.py``).
    """
    return redis_client(url, timeout_seconds)


class Cooldown:
    """Whether to ask Redis now: not for ``rest_seconds`` after a failure. Shared by the clients
    of one process, so a hang is paid for once, not once per client."""

    def __init__(
        self, rest_seconds: float = REST_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rest_seconds = rest_seconds
        self._clock = clock
        self._resting_until = 0.0

    @property
    def resting(self) -> bool:
        """True while a recent failure says not to ask Redis."""
        return self._clock() < self._resting_until

    def failed(self, what: str) -> None:
        """Redis failed ``what``: rest before the next try."""
        if not self.resting:
            log.warning("Redis failed (%s); not asking it for %.0f s", what, self.rest_seconds)
        self._resting_until = self._clock() + self.rest_seconds
