"""How many attempts each callback may have in flight: a limit learned from its answers (AIMD).

A callback (or ad-hoc URL: a *lane*) starts with a few attempts in flight. Each success adds one,
up to ``callback_concurrency``; an answer that says the receiver is struggling -- a timeout, a
refused or dropped connection, 429, 502, 503 or 504 -- halves it, down to one. A dying receiver
so sheds load by itself, and twenty dead ones hold a few slots each instead of every slot there
is, while a healthy receiver grows to its full share within its first hundred answers.

Each process keeps the limits it learned; ``shared_lanes`` shares them (and each callback's own
cap and rate) across the fleet through Redis, falling back to these when Redis is away. The claim
query enforces them.
"""

from __future__ import annotations

from collections import OrderedDict

from workers.delivery.http import ErrorKind, HttpResult

# Where a lane no process has heard from starts.
INITIAL_LIMIT = 8
# Answers that mean "send me less".
STRUGGLING_STATUSES = frozenset({429, 502, 503, 504})
STRUGGLING_ERRORS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION})
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

    def limit(self, lane: str) -> int:
        """How many attempts ``lane`` may have in flight now."""
        return self._limits.get(lane, self.initial)

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
        elif result.status is not None:
            updated = min(cap or self.ceiling, current + 1)
        else:
            updated = current  # refused by our own guard or too large: says nothing of the lane
        self._remember(lane, updated)
        return updated

    def _remember(self, lane: str, limit: int) -> None:
        self._limits[lane] = limit
        self._limits.move_to_end(lane)
        if len(self._limits) > REMEMBERED_LANES:
            self._limits.popitem(last=False)
