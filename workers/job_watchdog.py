"""The job drain's watchdog: where each job of a leased batch stands, and a thread that hands the
rest of the batch back when one of its jobs runs long (see ``workers/running.py``)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.running import ClaimedJob, Outcome


@dataclass(frozen=True)
class Finished:
    """A job that has run, and what came of it, while its end waits to be recorded."""

    claimed: ClaimedJob
    outcome: Outcome
    ran_at: float  # monotonic, when the job's run ended


@dataclass
class _Batch:
    """The jobs one claim leased to a drain, and where each stands."""

    unstarted: deque[ClaimedJob]
    ended: list[Finished] = field(default_factory=list)  # run, not yet recorded
    running: ClaimedJob | None = None
    running_since: float = 0.0  # monotonic
    handed_back: bool = False  # once per batch, whether or not Postgres took it
    handing_back: bool = False
    # Jobs the watchdog could not put back (Postgres did not answer): the drain releases them
    # with its next commit instead of running them while Postgres may still be away.
    to_release: list[ClaimedJob] = field(default_factory=list)


class Watchdog:
    """Hands the rest of a batch back when one of its jobs runs long.

    A drain leases several queued jobs at once and runs them one after another. If one of them
    runs past ``overdue_ms``, this thread records the ends waiting to be recorded and puts the
    jobs not yet started back on the queue (and wakes a worker for them), on a connection of its
    own, while the long job keeps running. So a slow job holds up no other job, however many the
    drain leased with it.
    """

    def __init__(
        self, hand_back: Callable[[list[Finished], list[ClaimedJob]], bool], overdue_ms: int
    ) -> None:
        self._hand_back = hand_back
        self._overdue_seconds = overdue_ms / 1000
        self._changed = threading.Condition()
        self._batch: _Batch | None = None
        self._thread: threading.Thread | None = None

    def watch(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._changed:
            self._batch = _Batch(deque(jobs))
            self._changed.notify_all()
        if self._thread is None or not self._thread.is_alive():
            # Started in the process that runs the jobs: a thread does not survive a fork.
            self._thread = threading.Thread(target=self._watch, name="job-watchdog", daemon=True)
            self._thread.start()

    def next_job(self) -> ClaimedJob | None:
        """The batch's next job to run; None when none is left or the rest went back."""
        with self._changed:
            batch = self._current()
            self._changed.wait_for(lambda: not batch.handing_back)
            return batch.unstarted[0] if batch.unstarted else None

    def oldest_end(self) -> float | None:
        """When the oldest end not yet recorded was reached (monotonic), if any."""
        with self._changed:
            ended = self._current().ended
            return ended[0].ran_at if ended else None

    def take_ended(self) -> list[Finished]:
        """The ends not yet recorded, for the drain to record now."""
        with self._changed:
            batch = self._current()
            self._changed.wait_for(lambda: not batch.handing_back)
            ended, batch.ended = batch.ended, []
            return ended

    def start(self, job: ClaimedJob) -> None:
        with self._changed:
            batch = self._current()
            assert batch.unstarted[0] is job, "jobs start in the order next_job gives them"
            batch.unstarted.popleft()
            batch.running, batch.running_since = job, time.monotonic()
            self._changed.notify_all()

    def end(self, finished: Finished | None) -> None:
        with self._changed:
            batch = self._current()
            batch.running = None
            if finished is not None:
                batch.ended.append(finished)
            self._changed.notify_all()

    def stop_watching(self) -> tuple[list[Finished], list[ClaimedJob], bool]:
        """The batch is over: its ends not yet recorded, the jobs it did not start, and whether
        any job of it ran long."""
        with self._changed:
            batch = self._current()
            self._changed.wait_for(lambda: not batch.handing_back)
            self._batch = None
            self._changed.notify_all()
            return batch.ended, list(batch.unstarted) + batch.to_release, batch.handed_back

    def _current(self) -> _Batch:
        assert self._batch is not None, "no batch is being watched"
        return self._batch

    def _watch(self) -> None:
        while True:
            with self._changed:
                batch = self._batch
                if (
                    batch is None
                    or batch.running is None
                    or batch.handed_back
                    or not (batch.unstarted or batch.ended)
                ):
                    self._changed.wait()
                    continue
                overdue_in = batch.running_since + self._overdue_seconds - time.monotonic()
                if overdue_in > 0:
                    self._changed.wait(overdue_in)
                    continue
                ended, unstarted = batch.ended, list(batch.unstarted)
                batch.ended, batch.handed_back, batch.handing_back = [], True, True
                batch.unstarted.clear()
            handed = self._hand_back(ended, unstarted)
            with self._changed:
                if not handed:
                    # Postgres would not take them: the drain records the ends and releases the
                    # rest once the long job is over, retrying as it does for its own.
                    batch.ended[:0] = ended
                    batch.to_release += unstarted
                batch.handing_back = False
                self._changed.notify_all()
