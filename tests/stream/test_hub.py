"""The hub's one recheck for all waiters: a change that nobody announced still wakes the waiters
of that job, and only them, with one fingerprint read per round however many wait."""

from __future__ import annotations

import asyncio
import contextlib
import resource

from app.stream.hub import Hub, job_key
from app.stream.server import raise_open_files_limit
from tests.support.processes import free_port

RECHECK = 0.05
# How long a waiter that should be woken is given: many rounds, for a busy host.
WAKE_WITHIN = RECHECK * 100


class Jobs:
    """Fingerprints as the stream's reads give them, changed by the test."""

    def __init__(self, ids: list[str]) -> None:
        self.fingerprints = {job_id: "v1" for job_id in ids}
        self.reads: list[int] = []

    def __call__(self, ids: list[str]) -> dict[str, str]:
        self.reads.append(len(ids))
        return {job_id: self.fingerprints[job_id] for job_id in ids}


async def woken(event: asyncio.Event, within: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), within)
    except TimeoutError:
        return False
    return True


def test_an_unannounced_change_wakes_that_jobs_waiters_only():
    ids = [f"job-{n}" for n in range(500)]
    jobs = Jobs(ids)

    async def go() -> tuple[bool, bool, list[int]]:
        # Nothing listens on this port: every announcement is lost, as when Redis is away.
        hub = Hub(f"redis://127.0.0.1:{free_port()}/0", jobs, RECHECK)
        await hub.start()
        try:
            with contextlib.ExitStack() as held:
                waiters = {
                    job_key(job_id): held.enter_context(hub.waiting(job_key(job_id)))
                    for job_id in ids
                }
                await asyncio.sleep(RECHECK * 3)  # the first rounds: nothing changed
                if any(event.is_set() for event in waiters.values()):
                    return False, True, list(jobs.reads)
                jobs.fingerprints["job-7"] = "v2"
                changed = await woken(waiters[job_key("job-7")], WAKE_WITHIN)
                others = any(
                    event.is_set() for key, event in waiters.items() if key != job_key("job-7")
                )
                return changed, others, list(jobs.reads)
        finally:
            await hub.stop()

    changed, others, reads = asyncio.run(go())

    assert changed, "the changed job's waiter was never woken"
    assert not others, "waiters of unchanged jobs were woken"
    assert reads and all(count == len(ids) for count in reads)  # one read per round for all


def test_a_waiter_whose_job_changed_after_it_looked_is_woken_in_the_first_round():
    jobs = Jobs(["job-1", "job-2"])

    async def go() -> tuple[bool, bool]:
        hub = Hub(f"redis://127.0.0.1:{free_port()}/0", jobs, RECHECK)
        await hub.start()
        try:
            with hub.waiting(job_key("job-1")) as stale, hub.waiting(job_key("job-2")) as fresh:
                hub.saw(stale, "v0")  # it read the job before a change nobody announced
                hub.saw(fresh, "v1")
                return await woken(stale, WAKE_WITHIN), await woken(fresh, RECHECK * 4)
        finally:
            await hub.stop()

    stale_woken, fresh_woken = asyncio.run(go())

    assert stale_woken
    assert not fresh_woken


def test_the_stream_process_lifts_its_open_files_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        raised = raise_open_files_limit()
        assert raised == (hard if hard != resource.RLIM_INFINITY else 1_048_576)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
