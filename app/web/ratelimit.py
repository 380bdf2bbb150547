"""Per-tenant API rate limits, counted in Redis so every gunicorn worker and host shares them.

The counting is the ``limits`` library's fixed window, made in one Lua call of our own per request
that also reads the API-key generation (``app/web/key_cache.py``): one round trip for both. The
Flask extension's own bookkeeping per request cost more CPU than the count itself.

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
from dataclasses import dataclass

import redis
from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from app.cooldown import Cooldown, quick_redis
from app.errors import error_response
from app.key_generation import GENERATION_KEY
from app.web import (
    Unauthorized,
    bearer_token_or_none,
    current_tenant,
    is_api_path,
    set_current_tenant,
)
from app.web.key_cache import KeyCache
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


# One round trip: count a request in its fixed window as the ``limits`` library does (INCRBY, and
# EXPIRE on the window's first request), and read the API-key generation beside it.
_HIT = """
local count = redis.call('INCRBY', KEYS[1], 1)
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1]), redis.call('GET', KEYS[2]) or '0'}
"""


@dataclass(frozen=True)
class Hit:
    allowed: bool
    retry_after: int  # whole seconds until the window resets; at least 1
    generation: bytes | None  # the API-key generation; None when counted in memory


class TenantRateLimit:
    """One limit for every API request of a tenant, shared through Redis."""

    def __init__(self, settings: Settings, cooldown: Cooldown | None = None) -> None:
        self.limit: RateLimitItem = parse(settings.rate_limit)
        # A hung Redis must not hang the API: the pool is quick_redis's, which gives up on it
        # quickly, without retries, and behind Sentinel follows the primary.
        self._redis = quick_redis(settings.redis_url, settings.redis_timeout_seconds)
        self._hit = self._redis.register_script(_HIT)
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.cooldown = cooldown or Cooldown()

    def hit(self, key: str) -> Hit:
        """Count one request for ``key``."""
        if not self.cooldown.resting:
            window = f"LIMITS:{self.limit.key_for(KEY_PREFIX, key)}"
            try:
                count, ttl, generation = self._hit(
                    keys=[window, GENERATION_KEY], args=[self.limit.get_expiry()]
                )
                return Hit(int(count) <= self.limit.amount, max(1, int(ttl)), generation)
            except Exception:
                log.warning("rate limit: Redis unavailable, counting in memory for a while")
                self.cooldown.failed("rate limit")
        allowed = self.local.hit(self.limit, KEY_PREFIX, key)
        reset_at, _remaining = self.local.get_window_stats(self.limit, KEY_PREFIX, key)
        return Hit(allowed, max(1, math.ceil(reset_at - time.time())), None)

    def generation(self) -> bytes | None:
        """The API-key generation now, or None while Redis is not answering."""
        if self.cooldown.resting:
            return None
        try:
            generation: bytes | None = self._redis.get(GENERATION_KEY)  # type: ignore[assignment]
            return generation or b"0"
        except redis.RedisError:
            self.cooldown.failed("api key generation")
            return None


def init_app(app: Flask, settings: Settings, cooldown: Cooldown | None = None) -> TenantRateLimit:
    """Limit every /v1 request to ``settings.rate_limit`` per tenant; 429 with Retry-After.

    The same Redis call tells whether the API key a request carries, if this process remembers
    it, is still good (``app/web/key_cache.py``): a request of a remembered key asks Postgres
    nothing before its view runs."""
    rate_limit = TenantRateLimit(settings, cooldown)
    keys = KeyCache(settings.api_key_cache_seconds)

    @app.before_request
    def check_rate_limit() -> Response | None:
        if request.endpoint is None or not is_api_request():
            return None  # an unknown route is a 404 and counts against nobody
        api_key = bearer_token_or_none()
        remembered = keys.get(api_key) if api_key else None
        if api_key and remembered is not None:
            hit = rate_limit.hit(f"tenant:{remembered.tenant['id']}")
            if hit.generation == remembered.generation:
                set_current_tenant(remembered.fresh_tenant())
            else:
                # Something changed what keys let in (or Redis is not answering): ask Postgres.
                # The count stands: a key belongs to one tenant for good.
                keys.forget(api_key)
                identify_caller()
                _remember(api_key, hit.generation)
        else:
            # Read before Postgres is asked: a change committed in between bumps it past this.
            generation = rate_limit.generation() if api_key and keys.enabled else None
            identify_caller()
            _remember(api_key, generation)
            hit = rate_limit.hit(rate_limit_key())
        if hit.allowed:
            return None
        return error_response(
            429,
            f"Too many requests: the limit is {rate_limit.limit}; retry in {hit.retry_after} s.",
            headers={"Retry-After": str(hit.retry_after)},
        )

    def _remember(api_key: str | None, generation: bytes | None) -> None:
        tenant = g.get("tenant")
        if api_key and tenant is not None and generation is not None:
            keys.remember(api_key, tenant, generation)

    return rate_limit
