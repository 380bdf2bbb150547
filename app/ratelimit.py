"""Per-tenant API rate limits, counted in Redis so every gunicorn worker and host shares them."""

from __future__ import annotations

import contextlib
import math
import time

from flask import Flask, g, request
from flask_limiter import Limiter, RateLimitExceeded

from app.errors import error_response
from app.web import Unauthorized, current_tenant
from config.settings import Settings

API_PREFIX = "/v1/"
KEY_PREFIX = "boomerang-rate"


def is_api_request() -> bool:
    """Only the API is limited: probes, the OpenAPI document, docs and redirect links are not."""
    return request.path.startswith(API_PREFIX)


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


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Limit every /v1 request to ``settings.rate_limit`` per tenant; 429 with Retry-After."""
    # Registered before the limiter's own hook, so the tenant is known when the key is asked for.
    app.before_request(identify_caller)
    limiter = Limiter(
        rate_limit_key,
        # One budget per tenant across every route, not one per route.
        application_limits=[settings.rate_limit],
        storage_uri=settings.redis_url,
        # A hung Redis must not hang the API.
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        # Redis only wakes workers (see the README): while it is down, each process keeps
        # counting in memory rather than failing every request.
        in_memory_fallback_enabled=True,
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        # Limiter's own headers would put Retry-After on every response; the 429 sets its own.
        headers_enabled=False,
    )
    limiter.request_filter(lambda: not is_api_request())
    limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def handle_rate_limited(exc: RateLimitExceeded):
        retry_after = _seconds_until_reset(limiter)
        return error_response(
            429,
            f"Too many requests: the limit is {exc.limit.limit}; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    return limiter


def _seconds_until_reset(limiter: Limiter) -> int:
    """Whole seconds until the breached window resets; at least 1."""
    breached = limiter.current_limit
    if breached is None:
        return 1
    reset_at = breached.window[0]
    return max(1, math.ceil(reset_at - time.time()))
