"""A ceiling on each tenant's outbound attempts per second, counted in Redis across every worker
and host, so no tenant can aim the fleet at someone else's site faster than that.

Deliveries over the ceiling are not dropped: they go back to the queue, due the next second. If
Redis cannot be reached the ceiling is not applied (it fails open) for a few seconds: delivery is
the service's job, the learned per-callback limits still bound each receiver, and Redis being away
must not stop every delivery.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence

import redis

from app.cooldown import quick_redis
from config.settings import Settings
from workers.delivery.store import ClaimedDelivery

log = logging.getLogger(__name__)

KEY_PREFIX = "boomerang:tenant-attempts"
# After Redis fails, skip the ceiling this long before asking Redis again.
SKIP_AFTER_FAILURE_SECONDS = 5.0


class TenantCeiling:
    """Admits at most ``tenant_attempts_per_second`` attempts per tenant per second."""

    def __init__(self, settings: Settings) -> None:
        self.per_second = settings.tenant_attempts_per_second
        # A hung Redis costs one claim this timeout, not a stalled drain.
        self._redis = quick_redis(settings.redis_url, settings.redis_timeout_seconds)
        self._skip_until = 0.0

    def admit(
        self, claimed: Sequence[ClaimedDelivery]
    ) -> tuple[list[ClaimedDelivery], list[ClaimedDelivery], float]:
        """Split a claim into what may be sent now and what must wait; and the Unix time the
        waiting ones become due (the start of the next second)."""
        now = time.time()
        second = math.floor(now)
        if not claimed or self.per_second <= 0 or time.monotonic() < self._skip_until:
            return list(claimed), [], second + 1
        by_tenant: dict[uuid.UUID | None, list[ClaimedDelivery]] = defaultdict(list)
        for item in claimed:
            by_tenant[item.tenant_id].append(item)
        wanted = Counter({tenant: len(items) for tenant, items in by_tenant.items()})
        try:
            counts = self._count(wanted, second)
        except redis.RedisError:
            log.warning("tenant ceiling: Redis unavailable, not applied for a while")
            self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
            return list(claimed), [], second + 1
        admitted: list[ClaimedDelivery] = []
        waiting: list[ClaimedDelivery] = []
        for tenant, items in by_tenant.items():
            already = counts[tenant] - len(items)
            room = max(0, self.per_second - already)
            admitted += items[:room]
            waiting += items[room:]
        return admitted, waiting, second + 1

    def _count(self, wanted: Counter[uuid.UUID | None], second: int) -> dict:
        """Add each tenant's wanted attempts to its count for this second; the new counts."""
        pipeline = self._redis.pipeline(transaction=False)
        tenants = list(wanted)
        for tenant in tenants:
            key = f"{KEY_PREFIX}:{tenant}:{second}"
            pipeline.incrby(key, wanted[tenant])
            pipeline.expire(key, 2)
        results = pipeline.execute()
        return {tenant: int(results[2 * index]) for index, tenant in enumerate(tenants)}
