"""Waiting for a job to finish by long-polling it: the loop's state, apart from how each poll is
sent (the sync and async clients each send it their own way)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import cast

import httpx

from boomerang_client import calls
from boomerang_client.calls import Call, Id
from boomerang_client.errors import WaitTimeout
from boomerang_client.models import Job

# The server refuses a longer wait (422).
MAX_WAIT_SECONDS = 60
FINISHED = frozenset({"succeeded", "failed"})


def finished(job: Job) -> bool:
    return job["status"] in FINISHED


class LongPoll:
    """Each poll asks for the job once it differs from the ETag last seen, for as long as the
    time left allows (in whole seconds, so it may overrun by less than one)."""

    def __init__(
        self, job_id: Id, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        self.job_id = job_id
        self.clock = clock
        self.deadline = clock() + timeout
        self.job: Job | None = None
        self.etag: str | None = None

    def next_call(self) -> Call | None:
        """The next poll, or None once the job finished or the time is up."""
        if self.job is not None and finished(self.job):
            return None
        remaining = self.deadline - self.clock()
        if self.job is not None and remaining <= 0:
            return None
        # The first poll has no ETag, so it answers at once with the job as it is.
        wait = min(MAX_WAIT_SECONDS, max(0, math.ceil(remaining)))
        return calls.long_poll(self.job_id, wait, self.etag)

    def record(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            self.job = cast(Job, response.json())
            self.etag = response.headers.get("ETag")

    def outcome(self) -> Job:
        """The finished job; WaitTimeout if it has not finished."""
        if self.job is None or not finished(self.job):
            raise WaitTimeout(self.job)
        return self.job
