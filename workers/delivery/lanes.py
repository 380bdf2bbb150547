"""How many attempts each callback may have in flight: a limit learned from its answers (AIMD).

A callback (or ad-hoc URL: a *lane*) starts with a few attempts in flight. Each success adds one,
up to ``callback_concurrency``; an answer that says the receiver is struggling -- a timeout, a
refused or dropped connection, 429, 502, 503 or 504 -- halves it, down to one. A dying receiver
so sheds load by itself, and twenty dead ones hold a few slots each instead of every slot there
is, while a healthy receiver grows to its full share within its first hundred answers. (The
fleet's shared limit grows faster until its first halving: see ``shared_lanes``.)

A process also keeps apart the lanes it has not heard answer well (new ones, and those whose last
answer was a sign of trouble): together they may hold at most half of its slots, and a new one
may still send one attempt to prove itself while they hold less than three quarters
(``split_unproven``). However many receivers hang, lanes known to answer always find room, and a
new receiver that answers is not kept waiting behind them.

Each process keeps the limits it learned; ``shared_lanes`` shares them (and each callback's own
cap and rate) across the fleet through Redis, falling back to these when Redis is away. The claim
query enforces them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from workers.delivery.http import ErrorKind, HttpResult

if TYPE_CHECKING:
    from workers.delivery.store import ClaimedDelivery

# Where a lane no process has heard from starts.
INITIAL_LIMIT = 8
# Answers that mean "send me less".
STRUGGLING_STATUSES = frozenset({429, 502, 503, 504})
STRUGGLING_ERRORS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION})
# The share of a process's slots that lanes not known to answer may hold between them. Half: a
# burst to many new receivers still starts at once, and receivers that hang until the read
# timeout can never take the slots of those that answer.
UNPROVEN_SHARE = 0.5
# Beyond that share, a lane with nothing in flight may still send one attempt to prove itself,
# until they hold this share: a quarter of the slots stays for lanes known to answer.
PROBE_SHARE = 0.75
# Lanes remembered at most; the least recently heard from are forgotten first (ad-hoc URLs are
# many, and a forgotten lane only starts again from INITIAL_LIMIT).
REMEMBERED_LANES = 10_000


def struggling(result: HttpResult) -> bool:
    """Whether an attempt's outcome says the receiver should get fewer attempts at once."""
    if result.status is not None:
        return result.status in STRUGGLING_STATUSES
    return result.error_kind in STRUGGLING_ERRORS


class LaneLimits:
    """The learned in-flight limit of each lane, between 1 and its cap: ``ceiling``, unless the
    callback sets its own max_concurrency."""

    def __init__(self, ceiling: int, initial: int = INITIAL_LIMIT) -> None:
        self.ceiling = ceiling
        self.initial = min(initial, ceiling)
        self._limits: OrderedDict[str, int] = OrderedDict()
        # Lanes whose last answer here was a good one (any status but a sign of trouble).
        self._answering: OrderedDict[str, None] = OrderedDict()

    def limit(self, lane: str) -> int:
        """How many attempts ``lane`` may have in flight now."""
        return self._limits.get(lane, self.initial)

    def answering(self, lane: str) -> bool:
        """Whether ``lane``'s last answer to this process was a good one."""
        return lane in self._answering

    def known(self) -> dict[str, int]:
        """Every lane's limit that differs from where a new lane starts."""
        return {lane: limit for lane, limit in self._limits.items() if limit != self.initial}

    def set(self, lane: str, limit: int) -> None:
        """Take a limit learned elsewhere (the fleet's, from Redis)."""
        # Not capped at ``ceiling``: a callback's own max_concurrency may be higher.
        self._remember(lane, max(1, limit))

    def heard(self, lane: str, result: HttpResult, cap: int | None = None) -> int:
        """Learn from one attempt's outcome (never growing past ``cap``); the new limit."""
        current = self.limit(lane)
        if struggling(result):
            updated = max(1, current // 2)
            self._answering.pop(lane, None)
        elif result.status is not None:
            updated = min(cap or self.ceiling, current + 1)
            self._answering[lane] = None
            self._answering.move_to_end(lane)
            if len(self._answering) > REMEMBERED_LANES:
                self._answering.popitem(last=False)
        else:
            updated = current  # refused by our own guard or too large: says nothing of the lane
        self._remember(lane, updated)
        return updated

    def _remember(self, lane: str, limit: int) -> None:
        self._limits[lane] = limit
        self._limits.move_to_end(lane)
        if len(self._limits) > REMEMBERED_LANES:
            self._limits.popitem(last=False)


def unproven_in_flight(in_flight: Mapping[str, int], limits: LaneLimits) -> int:
    """The attempts in flight of lanes not known to answer."""
    return sum(count for lane, count in in_flight.items() if not limits.answering(lane))


def unproven_share(slots: int) -> int:
    """How many of a process's ``slots`` lanes not known to answer may hold between them."""
    return max(1, int(slots * UNPROVEN_SHARE))


def split_unproven(
    claimed: Sequence[ClaimedDelivery],
    in_flight: Mapping[str, int],
    limits: LaneLimits,
    slots: int,
) -> tuple[list[ClaimedDelivery], list[ClaimedDelivery]]:
    """What of a claim may go now, and what must wait: deliveries of lanes not known to answer
    beyond their share of the process's ``slots``. Past the share, such a lane with nothing in
    flight may still send one (a probe, within ``PROBE_SHARE``), so a new receiver that answers
    proves itself at once rather than waiting behind hanging ones for their timeout."""
    held = unproven_in_flight(in_flight, limits)
    share = unproven_share(slots)
    probe_share = max(share, int(slots * PROBE_SHARE))
    started: set[str] = set()
    go: list[ClaimedDelivery] = []
    wait: list[ClaimedDelivery] = []
    for item in claimed:
        lane = item.lane
        probe = in_flight.get(lane, 0) == 0 and lane not in started
        if limits.answering(lane):
            go.append(item)
        elif held < share or (probe and held < probe_share):
            go.append(item)
            held += 1
            started.add(lane)
        else:
            wait.append(item)
    return go, wait
