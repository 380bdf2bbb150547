"""Per-tenant API rate limits, counted in Redis so every gunicorn worker and host shares them.

The counting is the ``limits`` library's fixed window (one Lua call per request, the same as
flask-limiter makes), used directly: the Flask extension's own bookkeeping per request cost more
CPU than the count itself.

While Redis cannot be reached or does not answer within ``BOOMERANG_REDIS_TIMEOUT_SECONDS``,
the limit falls back to counting in this process's memory while the process's Redis cooldown
rests (a few seconds) rather than failing or stalling every request: Redis only wakes workers,
and the API keeps answering with a limit that is per process instead of shared.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter

from app.cooldown import Cooldown, quick_redis
from app.errors import error_response
from app.web import Unauthorized, current_tenant, is_api_path
from config.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "boomerang-rate"


def is_api_request() -> bool:
    """Only the API is limited: probes, the OpenAPI document, docs and redirect links are not."""
    return is_api_path(request.path)


def identify_caller() -> None:
    """Authenticate before the limit is counted, so the key is the tenant behind a valid API key.

    Keying on the key's prefix as sent would let anyone drain another tenant's budget with a made-up
    secret, or dodge the limit with a fresh made-up prefix per request. A request without a valid
    key is counted against its address instead; it gets its 401 from the blueprint right after.
    """
    if request.endpoint is None or not is_api_request():
        return  # an unknown route is a 404 and counts against nobody
    with contextlib.suppress(Unauthorized):
        current_tenant()


def rate_limit_key() -> str:
    """Whom a request counts against: its tenant, or its address when it has no valid key."""
    tenant = g.get("tenant")
    if tenant is not None:
        return f"tenant:{tenant.id}"
    return f"address:{request.remote_addr or 'unknown'}"


class TenantRateLimit:
    """One limit for every API request of a tenant, shared through Redis."""

    def __init__(self, settings: Settings, cooldown: Cooldown | None = None) -> None:
        self.limit: RateLimitItem = parse(settings.rate_limit)
        # A hung Redis must not hang the API: the pool is quick_redis's, which gives up on it
        # quickly, without retries, and behind Sentinel follows the primary.
        client = quick_redis(settings.redis_url, settings.redis_timeout_seconds)
        self.shared = FixedWindowRateLimiter(
            RedisStorage("redis://", connection_pool=client.connection_pool)
        )
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.cooldown = cooldown or Cooldown()

    def _limiter(self) -> FixedWindowRateLimiter:
        return self.local if self.cooldown.resting else self.shared

    def hit(self, key: str) -> bool:
        """Count one request for ``key``; False when it is over the limit."""
        limiter = self._limiter()
        try:
            return limiter.hit(self.limit, KEY_PREFIX, key)
        except Exception:
            if limiter is self.local:
                raise
            log.warning("rate limit: Redis unavailable, counting in memory for a while")
            self.cooldown.failed("rate limit")
            return self.local.hit(self.limit, KEY_PREFIX, key)

    def seconds_until_reset(self, key: str) -> int:
        """Whole seconds until ``key``'s window resets; at least 1."""
        try:
            reset_at, _remaining = self._limiter().get_window_stats(self.limit, KEY_PREFIX, key)
        except Exception:
            return 1
        return max(1, math.ceil(reset_at - time.time()))


def init_app(app: Flask, settings: Settings, cooldown: Cooldown | None = None) -> TenantRateLimit:
    """Limit every /v1 request to ``settings.rate_limit`` per tenant; 429 with Retry-After."""
    rate_limit = TenantRateLimit(settings, cooldown)

    @app.before_request
    def check_rate_limit() -> Response | None:
        identify_caller()
        if request.endpoint is None or not is_api_request():
            return None
        key = rate_limit_key()
        if rate_limit.hit(key):
            return None
        retry_after = rate_limit.seconds_until_reset(key)
        return error_response(
            429,
            f"Too many requests: the limit is {rate_limit.limit}; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    return rate_limit
