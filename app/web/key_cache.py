"""What a web process remembers of the API keys it checked against Postgres, for a few seconds,
so that a busy client's requests skip the lookup.

Every API request already makes one Redis call for its rate limit (``app/web/ratelimit.py``);
that same call reads the API-key generation (``app/key_generation.py``), and an entry stored
under another generation is dropped: a revoked key is refused at once by every process. An entry
also lapses after ``BOOMERANG_API_KEY_CACHE_SECONDS``. While Redis cannot be reached nothing is
remembered or used, and every request asks Postgres.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from app.models import Tenant

# Past this many keys the oldest half is dropped: a flood of made-up keys never reaches here
# (only keys Postgres accepted are remembered), so this only bounds a process's memory.
MAX_KEYS = 10_000


@dataclass(frozen=True)
class Remembered:
    tenant: dict[str, Any]  # the tenant row's values
    generation: bytes
    until: float  # time.monotonic()

    def fresh_tenant(self) -> Tenant:
        """A new transient Tenant per request: nothing a request does to it reaches another."""
        return Tenant(**self.tenant)


class KeyCache:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[str, Remembered] = {}

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    @staticmethod
    def _slot(api_key: str) -> str:
        # The secret itself is not kept as a key of a long-lived dict.
        return hashlib.sha256(api_key.encode()).hexdigest()

    def get(self, api_key: str) -> Remembered | None:
        entry = self._entries.get(self._slot(api_key))
        if entry is None or entry.until < time.monotonic():
            return None
        return entry

    def remember(self, api_key: str, tenant: Tenant, generation: bytes) -> None:
        if not self.enabled:
            return
        if len(self._entries) >= MAX_KEYS:
            for slot in list(self._entries)[: MAX_KEYS // 2]:
                self._entries.pop(slot, None)
        values = {column.key: getattr(tenant, column.key) for column in Tenant.__table__.columns}
        self._entries[self._slot(api_key)] = Remembered(
            values, generation, time.monotonic() + self.seconds
        )

    def forget(self, api_key: str) -> None:
        self._entries.pop(self._slot(api_key), None)
