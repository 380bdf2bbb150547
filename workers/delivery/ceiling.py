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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from app.cooldown import quick_redis
from app.redis_scripts import evaluate_each
from config.settings import Settings
from workers.delivery.store import ClaimedDelivery

log = logging.getLogger(__name__)

KEY_PREFIX = "boomerang:tenant-attempts"
# After Redis fails, skip the ceiling this long before asking Redis again.
SKIP_AFTER_FAILURE_SECONDS = 5.0
# A second's count outlives its second only long enough for a late give-back to find it.
KEY_SECONDS = 2

# KEYS: the tenant's count for this second. ARGV: attempts wanted, the ceiling, key lifetime.
# Counts only what fits: attempts refused here are not counted, so they never crowd out others
# that could still go this second.
_TAKE_ROOM = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local taken = math.max(0, math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - count))
if taken > 0 then
  redis.call('INCRBY', KEYS[1], taken)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return taken
"""


@dataclass(frozen=True)
class Counted:
    """A claim split by the ceiling: ``admitted`` were counted in ``second`` (None: nothing was
    counted, the ceiling being off or Redis away); ``waiting`` become due at ``due_at`` (Unix
    time: the start of the next second)."""

    admitted: list[ClaimedDelivery]
    waiting: list[ClaimedDelivery]
    due_at: float
    second: int | None


class TenantCeiling:
    """Admits at most ``tenant_attempts_per_second`` attempts per tenant per second."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.per_second = settings.tenant_attempts_per_second
        self.clock = clock
        # A hung Redis costs one claim this timeout, not a stalled drain.
        self._redis = quick_redis(settings.redis_url, settings.redis_timeout_seconds)
        self._skip_until = 0.0
        self._take_room = self._redis.register_script(_TAKE_ROOM)

    def admit(self, claimed: Sequence[ClaimedDelivery]) -> Counted:
        """Split a claim into what may be sent now and what must wait for the next second."""
        second = math.floor(self.clock())
        if not claimed or self.per_second <= 0 or time.monotonic() < self._skip_until:
            return Counted(list(claimed), [], second + 1, None)
        by_tenant: dict[uuid.UUID | None, list[ClaimedDelivery]] = defaultdict(list)
        for item in claimed:
            by_tenant[item.tenant_id].append(item)
        try:
            taken = self._take({tenant: len(items) for tenant, items in by_tenant.items()}, second)
        except redis.RedisError:
            self._fail()
            return Counted(list(claimed), [], second + 1, None)
        admitted: list[ClaimedDelivery] = []
        waiting: list[ClaimedDelivery] = []
        for tenant, items in by_tenant.items():
            admitted += items[: taken[tenant]]
            waiting += items[taken[tenant] :]
        return Counted(admitted, waiting, second + 1, second)

    def recount_if_late(self, counted: Counted, admitted: Sequence[ClaimedDelivery]) -> Counted:
        """Count ``admitted`` again if the second they were counted in is over before they start.

        A claim that is slow to finish (a busy host, a slow commit) would otherwise start one
        second's attempts in the next, beside the next second's own: twice the ceiling there.
        Their old second needs no give-back, being past. What finds no room waits as usual."""
        if counted.second is None or math.floor(self.clock()) <= counted.second:
            return Counted(list(admitted), [], counted.due_at, counted.second)
        return self.admit(admitted)

    def give_back(self, counted: Counted, unsent: Sequence[ClaimedDelivery]) -> None:
        """Uncount admitted attempts that did not go after all (their callback's limit had no
        room): a tenant's ceiling counts what it sends, not what its claims asked for, or a
        burst whose claims are partly put back would spend its second on attempts never made."""
        if counted.second is None or not unsent:
            return
        pipeline = self._redis.pipeline(transaction=False)
        for tenant, count in Counter(item.tenant_id for item in unsent).items():
            key = _key(tenant, counted.second)
            pipeline.decrby(key, count)
            pipeline.expire(key, KEY_SECONDS)
        try:
            pipeline.execute()
        except redis.RedisError:
            self._fail()  # counted too high for this second: the tenant waits a little longer

    def _take(
        self, wanted: dict[uuid.UUID | None, int], second: int
    ) -> dict[uuid.UUID | None, int]:
        """Count, per tenant, as many of the wanted attempts as this second has room for; how
        many each got."""
        tenants = list(wanted)
        calls = [
            ([_key(tenant, second)], [wanted[tenant], self.per_second, KEY_SECONDS])
            for tenant in tenants
        ]
        taken = evaluate_each(self._redis, self._take_room, calls)
        return dict(zip(tenants, (int(count) for count in taken), strict=True))

    def _fail(self) -> None:
        log.warning("tenant ceiling: Redis unavailable, not applied for a while")
        self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS


def _key(tenant: uuid.UUID | None, second: int) -> str:
    return f"{KEY_PREFIX}:{tenant}:{second}"
