"""The API-key generation: one Redis counter, bumped by every change to what an API key lets in
(a key revoked, a tenant's settings changed, a tenant deleted), so that every web process drops
what it remembers of the keys it checked (``app/web/key_cache.py``) on its next request.

It is bumped when the change is made and again once it commits: a request that read the old rows
in between is forgotten by the second bump. Redis failing at both moments leaves a remembered key
valid until its entry lapses (``BOOMERANG_API_KEY_CACHE_SECONDS``).
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy.orm import Session

from app.cooldown import Cooldown, quick_redis
from app.db import after_commit

log = logging.getLogger(__name__)

GENERATION_KEY = "boomerang:api-keys:generation"
_INFO_KEY = "boomerang.key_generation"


class KeyGeneration:
    """Bumps the generation; a process that changes keys or tenants holds one."""

    def __init__(
        self, redis_url: str, timeout_seconds: float = 0.5, cooldown: Cooldown | None = None
    ) -> None:
        self._redis = quick_redis(redis_url, timeout_seconds)
        self._cooldown = cooldown or Cooldown()

    def bump(self) -> None:
        try:
            self._redis.incr(GENERATION_KEY)
        except redis.RedisError:
            # Tried even while resting: a missed bump keeps a revoked key working elsewhere.
            self._cooldown.failed("api key generation")
            log.warning("could not tell web processes that API keys changed", exc_info=True)


def attach_key_generation(session: Session, generation: KeyGeneration | None) -> None:
    """Changes made through ``session`` bump ``generation``."""
    if generation is not None:
        session.info[_INFO_KEY] = generation


def api_keys_changed(session: Session) -> None:
    """What an API key lets in changes in this transaction: bump now and after commit."""
    generation = session.info.get(_INFO_KEY)
    if generation is not None:
        generation.bump()
        after_commit(session, generation.bump)
