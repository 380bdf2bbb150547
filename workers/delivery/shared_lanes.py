"""Each lane's limits, shared by every delivery process on every host through Redis.

A lane (a callback, or an ad-hoc URL) has, fleet-wide:
- a concurrency cap: the callback's ``max_concurrency`` or ``callback_concurrency``;
- a learned limit under that cap (AIMD): halved at most once a second when the receiver
  struggles, so a dying receiver sheds load by itself whichever host sees it fail, and one more
  per answer after that; until its first halving, three more per answer (a slow start), so a new
  callback reaches its full rate in a few rounds although the whole fleet shares one limit;
- the attempts in flight: one sorted-set member per leased delivery, scored with its lease's end,
  so the slots of a process that dies come free when its leases do;
- an optional rate (``rate_limit_per_second``), shaped with GCRA: deliveries over it wait for
  their slot, they are never dropped;
- a pause until the receiver's ``Retry-After``.

Each claim asks once (one pipelined round trip, a script per lane) which of its deliveries may go;
each recorded batch tells once what came back. The scripts read Redis' own clock, so hosts whose
clocks differ still share one schedule. If Redis cannot be reached, each process falls back to the
limits it learned itself (``LaneLimits``) for a few seconds: delivery must not stop for a wake
store. The slots of attempts that come back meanwhile are freed once Redis is asked again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from app.cooldown import quick_redis
from app.redis_scripts import evaluate_each
from config.settings import Settings
from workers.delivery.http import HttpResult
from workers.delivery.lanes import LaneLimits, struggling
from workers.delivery.store import ClaimedDelivery

log = logging.getLogger(__name__)

KEY_PREFIX = "boomerang:lane"
# After Redis fails, use each process's own limits this long before asking Redis again.
SKIP_AFTER_FAILURE_SECONDS = 5.0
# A lane halves at most once in this long: the attempts that were in flight when a receiver
# started to fail all fail together, and that is one signal, not twenty.
CUT_WINDOW_SECONDS = 1.0
# A lane no process has heard from this long is forgotten (it starts again from the initial
# limit), so ad-hoc URLs do not pile up in Redis.
FORGET_SECONDS = 3600
# How long a process leaves alone a lane the fleet holds full before asking again.
FULL_RECHECK_SECONDS = 0.1
# ... and one refused while the others leave its even share free for it: soon, or that share
# would go unused. In a new callback's first burst the process that asked second otherwise sat
# out the first 100 ms while the first was held to half the limit.
OWED_RECHECK_SECONDS = 0.02
# What each answer adds to a lane's limit before the lane is first halved. One per answer doubles
# the limit a round; a round of one process costs a few ms of Postgres and Redis, and the fleet
# shares one limit that starts at INITIAL_LIMIT, so at one per answer a new callback took about
# 250 ms of a burst to reach full speed.
SLOW_START_STEP = 3
# Slots of answered attempts a process keeps to free later, at most, while Redis is not being
# asked; past that the oldest are left to run out with their leases.
UNFREED_SLOTS = 10_000
# Members one script call frees at most: Lua's unpack() stops at about 8,000.
CHUNK = 1_000
# How long a process refused for want of room counts as wanting its share of a lane: several
# rechecks long, so a process that asks again soon keeps its claim on a share.
WANTING_SECONDS = 1.0

# KEYS: state hash, in-flight sorted set, wanting sorted set. ARGV: lease seconds, cap, initial
# limit, rate per second (0: none), burst, the asking process's id, what it has in flight in the
# lane, then one member per delivery, in the order they should go.
# Returns: admitted count, the lane's limit, attempts in flight after, seconds until the rest may
# go (0: when a slot frees), and the most this process may hold now.
#
# Fair shares: a process that was refused for want of room is noted as wanting (for a second, or
# until it is given all it asks). While another process wants, each may hold only its even part
# of the limit; otherwise the first to ask could keep the whole limit busy and every other
# process would find it full, so one busy callback would be sent by one process at a time.
_ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local lease = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local rate = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local sender = ARGV[6]
local mine = tonumber(ARGV[7])
local state = redis.call('HMGET', KEYS[1], 'limit', 'paused_until', 'tat')
local limit = math.min(tonumber(state[1]) or tonumber(ARGV[3]), cap)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local busy = redis.call('ZCARD', KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - WANTING_SECONDS)
local others = redis.call('ZCARD', KEYS[3])
if redis.call('ZSCORE', KEYS[3], sender) then
  others = others - 1
end
local share = limit
if others > 0 then
  share = math.ceil(limit / (others + 1))
end
local paused_until = tonumber(state[2]) or 0
if paused_until > now then
  return {0, limit, busy, tostring(paused_until - now), share}
end
local wanted = #ARGV - 7
local admitted = math.max(0, math.min(wanted, limit - busy, share - mine))
local wait = 0
if rate > 0 and admitted > 0 then
  local interval = 1 / rate
  local tolerance = (burst - 1) * interval
  local start = math.max(tonumber(state[3]) or 0, now)
  local fit = 0
  if start <= now + tolerance then
    fit = math.floor((now + tolerance - start) / interval + 1e-9) + 1
  end
  -- Only what the rate held back waits for time; what the concurrency held back waits for a
  -- slot, as in a lane without a rate (and counts this process as wanting).
  local held_by_rate = fit < admitted
  if held_by_rate then
    admitted = fit
  end
  local tat = start + admitted * interval
  redis.call('HSET', KEYS[1], 'tat', tostring(tat))
  if held_by_rate then
    wait = math.max(tat - tolerance - now, 0.001)
  end
end
for index = 1, admitted do
  redis.call('ZADD', KEYS[2], now + lease, ARGV[7 + index])
end
if admitted < wanted and wait == 0 then
  redis.call('ZADD', KEYS[3], now, sender)
  redis.call('EXPIRE', KEYS[3], WANTING_SECONDS + 1)
else
  redis.call('ZREM', KEYS[3], sender)
end
redis.call('EXPIRE', KEYS[2], math.ceil(lease) + 60)
redis.call('EXPIRE', KEYS[1], FORGET_SECONDS)
return {admitted, limit, busy + admitted, tostring(wait), share}
""".replace("FORGET_SECONDS", str(FORGET_SECONDS)).replace("WANTING_SECONDS", repr(WANTING_SECONDS))

# KEYS: state hash, in-flight sorted set. ARGV: cap, initial limit, answers, struggling answers,
# seconds to pause (0: none), then the members that came back. Returns the lane's new limit and
# the attempts still in flight. A lane never halved (no ``cut_at``) grows by SLOW_START_STEP per
# answer; any other by one.
_HEARD = (
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local cap = tonumber(ARGV[1])
local answers = tonumber(ARGV[3])
local struggles = tonumber(ARGV[4])
local pause = tonumber(ARGV[5])
if #ARGV > 5 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 6))
end
local state = redis.call('HMGET', KEYS[1], 'limit', 'cut_at', 'paused_until')
local limit = math.min(tonumber(state[1]) or tonumber(ARGV[2]), cap)
if struggles > 0 then
  if now - (tonumber(state[2]) or 0) >= CUT_WINDOW_SECONDS then
    limit = math.max(1, math.floor(limit / 2))
    redis.call('HSET', KEYS[1], 'cut_at', tostring(now))
  end
elseif answers > 0 then
  local step = 1
  if not state[2] then
    step = SLOW_START_STEP
  end
  limit = math.min(cap, limit + answers * step)
end
redis.call('HSET', KEYS[1], 'limit', limit)
if pause > 0 and now + pause > (tonumber(state[3]) or 0) then
  redis.call('HSET', KEYS[1], 'paused_until', tostring(now + pause))
end
redis.call('EXPIRE', KEYS[1], FORGET_SECONDS)
return {limit, redis.call('ZCARD', KEYS[2])}
""".replace("CUT_WINDOW_SECONDS", repr(CUT_WINDOW_SECONDS))
    .replace("FORGET_SECONDS", str(FORGET_SECONDS))
    .replace("SLOW_START_STEP", str(SLOW_START_STEP))
)


def lane_keys(lane: str) -> tuple[str, str, str]:
    """The state hash, in-flight set and wanting set of a lane; URLs are hashed to keep keys
    short."""
    name = lane if len(lane) == 36 else hashlib.sha1(lane.encode()).hexdigest()
    return f"{KEY_PREFIX}:{name}", f"{KEY_PREFIX}:{name}:busy", f"{KEY_PREFIX}:{name}:wanting"


def slot_of(item: ClaimedDelivery) -> str:
    """A leased delivery's member in its lane's in-flight set: one per lease, never reused."""
    return f"{item.id}:{item.lease_id}"


def burst_of(rate: float) -> int:
    """How many deliveries a rate-limited lane may send back to back: a tenth of a second's
    worth, at least one. A receiver then sees at most ``rate + burst`` in any second."""
    return max(1, math.ceil(rate / 10))


@dataclass
class Admission:
    """What a claim may send now, and what waits: for a free slot (``wait_for_slot``), or
    until a given number of seconds from now (``wait_seconds``)."""

    admitted: list[ClaimedDelivery] = field(default_factory=list)
    wait_for_slot: list[ClaimedDelivery] = field(default_factory=list)
    wait_seconds: dict[float, list[ClaimedDelivery]] = field(default_factory=dict)

    def waiting_for_time(self) -> list[ClaimedDelivery]:
        """Everything in ``wait_seconds``, whatever its wait."""
        return [item for items in self.wait_seconds.values() for item in items]


@dataclass
class Answer:
    """One attempt's outcome, as the lanes learn from it."""

    claimed: ClaimedDelivery
    result: HttpResult
    pause_seconds: float | None = None  # a Retry-After on 429 or 503


class SharedLanes:
    """The fleet-wide limits of each lane, with this process's own ``LaneLimits`` as the
    fallback and as the claim's first guess at each lane's room."""

    def __init__(self, settings: Settings, local: LaneLimits) -> None:
        self.settings = settings
        self.local = local
        self._redis = quick_redis(settings.redis_url, settings.redis_timeout_seconds)
        self._admit = self._redis.register_script(_ADMIT)
        self._heard = self._redis.register_script(_HEARD)
        self._skip_until = 0.0
        # Who this process is to the other processes sharing a lane.
        self.sender = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Lanes the fleet holds full or paused, and when to ask about each again.
        self._held: dict[str, float] = {}
        # Slots of attempts that came back while Redis was not being asked (after a failure),
        # by lane, with the lane's cap: freed as soon as it is asked again. Left to their leases
        # instead, a callback with a small max_concurrency would look full to the whole fleet
        # for up to a lease after one Redis blip.
        self._unfreed: dict[str, tuple[int, list[str]]] = {}

    @property
    def shared(self) -> bool:
        """Whether Redis is being asked (False for a few seconds after it failed)."""
        return time.monotonic() >= self._skip_until

    def _asking_redis(self) -> bool:
        """Whether to ask Redis now: not for a while after it failed, and only once the slots
        kept meanwhile are freed."""
        return self.shared and (not self._unfreed or self._free_unheard())

    def held_lanes(self) -> list[str]:
        """Lanes not to claim for now: full or paused across the fleet."""
        now = time.monotonic()
        for lane in [lane for lane, until in self._held.items() if until <= now]:
            del self._held[lane]
        return list(self._held)

    def admit(
        self, claimed: Sequence[ClaimedDelivery], in_flight: Mapping[str, int] | None = None
    ) -> Admission:
        """Split a claim by what each lane allows across the fleet now. ``in_flight`` is what
        this process already has in flight per lane (it sizes the next claim; see ``_learn``)."""
        if not claimed:
            return Admission()
        if not self._asking_redis():
            return self._admit_locally(claimed, in_flight)
        by_lane = _by_lane(claimed)
        calls = []
        for lane, items in by_lane.items():
            cap, rate = _limits_of(items[0], self.settings)
            args = [
                self.settings.delivery_lease_seconds,
                cap,
                self.local.initial,
                rate,
                burst_of(rate) if rate else 1,
                self.sender,
                (in_flight or {}).get(lane, 0),
                *(slot_of(item) for item in items),
            ]
            calls.append((lane_keys(lane), args))
        try:
            answers = evaluate_each(self._redis, self._admit, calls)
        except redis.RedisError:
            self._fail()
            return self._admit_locally(claimed, in_flight)
        admission = Admission()
        for (lane, items), (count, limit, busy, wait, share) in zip(
            by_lane.items(), answers, strict=True
        ):
            count, wait_seconds = int(count), float(wait)
            mine = (in_flight or {}).get(lane, 0) + count if in_flight is not None else None
            self._learn(lane, int(limit), int(busy), mine, int(share))
            admission.admitted += items[:count]
            rest = items[count:]
            if not rest:
                continue
            if wait_seconds > 0:
                admission.wait_seconds.setdefault(wait_seconds, []).extend(rest)
                self._held[lane] = time.monotonic() + wait_seconds
            else:
                admission.wait_for_slot += rest
                owed = mine is not None and mine < _even_part(int(limit), int(share))
                recheck = OWED_RECHECK_SECONDS if owed else FULL_RECHECK_SECONDS
                self._held[lane] = time.monotonic() + recheck
        return admission

    def _admit_locally(
        self, claimed: Sequence[ClaimedDelivery], in_flight: Mapping[str, int] | None
    ) -> Admission:
        """Without Redis: this process's own limits, and each callback's max_concurrency counted
        in this process alone. The claim sized each callback by this process's learned limit,
        which starts at 8 for a callback it has not heard from, whatever its max_concurrency."""
        admission = Admission()
        for lane, items in _by_lane(claimed).items():
            cap, _ = _limits_of(items[0], self.settings)
            self.local.set(lane, min(self.local.limit(lane), cap))
            room = max(0, self.local.limit(lane) - (in_flight or {}).get(lane, 0))
            admission.admitted += items[:room]
            admission.wait_for_slot += items[room:]
        return admission

    def heard(self, answers: Sequence[Answer], in_flight: Mapping[str, int] | None = None) -> None:
        """Free the slots of the attempts that came back and learn from their outcomes.
        ``in_flight`` is what this process still has in flight per lane."""
        for answer in answers:
            cap, _ = _limits_of(answer.claimed, self.settings)
            self.local.heard(answer.claimed.lane, answer.result, cap)
        if not answers:
            return
        by_lane: dict[str, list[Answer]] = defaultdict(list)
        for answer in answers:
            by_lane[answer.claimed.lane].append(answer)
        if not self._asking_redis():
            self._keep_unfreed([answer.claimed for answer in answers])
            return
        calls = []
        for lane, lane_answers in by_lane.items():
            cap, _ = _limits_of(lane_answers[0].claimed, self.settings)
            said = [a for a in lane_answers if a.result.status is not None]
            pause = max((a.pause_seconds or 0.0 for a in lane_answers), default=0.0)
            args = [
                cap,
                self.local.initial,
                len(said),
                sum(1 for a in lane_answers if struggling(a.result)),
                pause,
                *(slot_of(a.claimed) for a in lane_answers),
            ]
            calls.append((lane_keys(lane), args))
        try:
            states = evaluate_each(self._redis, self._heard, calls)
        except redis.RedisError:
            self._fail()
            self._keep_unfreed([answer.claimed for answer in answers])
            return
        for lane, (limit, busy) in zip(by_lane, states, strict=True):
            mine = (in_flight or {}).get(lane, 0) if in_flight is not None else None
            self._learn(lane, int(limit), int(busy), mine)
            if lane in self._held and self._held[lane] - time.monotonic() <= FULL_RECHECK_SECONDS:
                del self._held[lane]  # a slot just came free

    def release(self, admitted: Sequence[ClaimedDelivery]) -> None:
        """Free the slots of admitted deliveries that will not be sent after all (their claim
        failed): held, they would keep their callback's room taken for a lease."""
        if admitted:
            self._keep_unfreed(admitted)
            if self.shared:
                self._free_unheard()

    def _keep_unfreed(self, items: Sequence[ClaimedDelivery]) -> None:
        """Remember the slots of these deliveries, to free them once Redis is asked again."""
        for lane, lane_items in _by_lane(items).items():
            cap, _ = _limits_of(lane_items[0], self.settings)
            _, slots = self._unfreed.pop(lane, (cap, []))
            # Re-inserted: the lane heard from most recently goes last.
            self._unfreed[lane] = (cap, slots + [slot_of(item) for item in lane_items])
        while sum(len(slots) for _, slots in self._unfreed.values()) > UNFREED_SLOTS:
            del self._unfreed[next(iter(self._unfreed))]  # the lane heard from longest ago

    def _free_unheard(self) -> bool:
        """Free the slots kept while Redis was not asked; False if Redis failed again. Their
        answers taught nothing: the limits already moved on in this process."""
        calls = [
            (lane_keys(lane), [cap, self.local.initial, 0, 0, 0, *slots[start : start + CHUNK]])
            for lane, (cap, slots) in self._unfreed.items()
            for start in range(0, len(slots), CHUNK)
        ]
        try:
            evaluate_each(self._redis, self._heard, calls)
        except (redis.ConnectionError, redis.TimeoutError):
            self._fail()
            return False
        except redis.RedisError:
            # Refused rather than unreached: asking again would be refused again, and would
            # keep this process off Redis for good. They run out with their leases instead.
            kept = sum(len(slots) for _, slots in self._unfreed.values())
            log.exception("shared lane limits: could not free %d kept slots", kept)
        self._unfreed.clear()
        return True

    def _learn(
        self, lane: str, limit: int, busy: int, mine: int | None, share: int | None = None
    ) -> None:
        """Keep the fleet's word locally. Knowing what this process holds, keep its share (the
        limit less what other processes hold, and no more than its even part while others
        want or hold some), so its next claim leases about what the fleet will admit rather than
        leasing a whole limit and putting most of it back. Without the even part while others
        merely held some, two processes sending to one callback each sized their claims by
        what the other held a round ago, and in a burst of 20,000 put back 1,390-1,740 of them."""
        if mine is None:
            self.local.set(lane, limit)
            return
        others = max(0, busy - mine)
        part = _even_part(limit, share or limit) if others else (share or limit)
        self.local.set(lane, min(limit - others, part))

    def _fail(self) -> None:
        log.warning("shared lane limits: Redis unavailable, each process uses its own for a while")
        self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
        self._held.clear()


def _even_part(limit: int, share: int) -> int:
    """What a process refused for want of room may count on once it is noted as wanting: the
    share the script gave while others wanted too, or else half (another process holds the
    rest)."""
    return share if share < limit else math.ceil(limit / 2)


def _by_lane(claimed: Sequence[ClaimedDelivery]) -> dict[str, list[ClaimedDelivery]]:
    by_lane: dict[str, list[ClaimedDelivery]] = defaultdict(list)
    for item in claimed:
        by_lane[item.lane].append(item)
    return by_lane


def _limits_of(item: ClaimedDelivery, settings: Settings) -> tuple[int, float]:
    """A lane's concurrency cap and rate (0: none)."""
    return item.max_concurrency or settings.callback_concurrency, item.rate_limit_per_second or 0
