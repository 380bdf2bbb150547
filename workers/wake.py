"""Waking delivery workers without one broker message per delivery.

Postgres holds the due deliveries; a ``boomerang.deliver`` message only tells a delivery process
to go and drain them. One message per delivery would cost more in Celery than the delivery
itself, so wakes are coalesced through a Redis key that means "a drain is running or about to":

- whoever makes work due (the outbox after commit, a manual retry, the sweep) sets the key with
  SET NX and sends a wake only if it was not set already;
- a draining process keeps the key alive while it works, and deletes it *before* its last look
  for due work, so anything committed after that look finds the key gone and sends a new wake;
- the key expires on its own, so a process killed mid-drain blocks nobody for long, and the sweep
  finds its leased work again when the leases run out.

A drain that finds more due work than it can take asks for help: one extra wake per second at
most, so idle processes on other machines join in while a burst lasts.
"""

from __future__ import annotations

import contextlib
import logging

import redis

log = logging.getLogger(__name__)

WAKE_KEY = "boomerang:deliveries:draining"
HELP_KEY = "boomerang:deliveries:help"
# Long enough to outlive the gap between a drain's refreshes, short enough that a killed drain
# delays new work by seconds, not minutes.
WAKE_TTL_SECONDS = 10
HELP_INTERVAL_MS = 1000


class Waker:
    """Coalesces delivery wakes for one process; ``send`` puts the wake message on the broker."""

    def __init__(self, redis_url: str, send) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._send = send

    def wake(self) -> bool:
        """Wake a delivery process unless one is draining already; True if a wake was sent."""
        try:
            if not self._redis.set(WAKE_KEY, "1", nx=True, ex=WAKE_TTL_SECONDS):
                return False
        except redis.RedisError:
            log.warning("could not coordinate a delivery wake; sending one anyway", exc_info=True)
        self._send()
        return True

    def ask_for_help(self) -> bool:
        """Wake one more process, at most once a second however many drains ask."""
        try:
            if not self._redis.set(HELP_KEY, "1", nx=True, px=HELP_INTERVAL_MS):
                return False
        except redis.RedisError:
            return False  # the burst is being drained already; help is only an optimisation
        self._send()
        return True

    def draining(self) -> None:
        """A drain is at work: keep the key that stops redundant wakes."""
        # On failure, worst case a few redundant wakes, each a quick empty drain.
        with contextlib.suppress(redis.RedisError):
            self._redis.set(WAKE_KEY, "1", ex=WAKE_TTL_SECONDS)

    def about_to_stop(self) -> None:
        """Called before a drain's last look for work: later work must send its own wake."""
        # On failure the key expires by itself, and the sweep covers the gap.
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(WAKE_KEY)
