"""Jobs submitted through a ``POST /v1/jobs`` API from Python, where the figure is a latency, not
the API's rate (rates come from wrk, see bench/wrk.py): a number of jobs at a concurrency, or a
steady rate for a while. Each accepted job's id and the moment its request was sent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Submitted:
    """What a submission run did: each accepted job's send time and each request's latency."""

    sent_at: dict[str, float] = field(default_factory=dict)  # job id -> unix time sent
    latencies: list[float] = field(default_factory=list)  # seconds, every request
    errors: int = 0


async def _post(client: aiohttp.ClientSession, url: str, number: int, submitted: Submitted) -> None:
    sent_wall, sent = time.time(), time.perf_counter()
    try:
        async with client.post(url, json={"type": "echo", "input": {"n": number}}) as response:
            answer = await response.json(content_type=None)
            accepted = response.status in (200, 202)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        accepted, answer = False, None
    submitted.latencies.append(time.perf_counter() - sent)
    if accepted and isinstance(answer, dict) and "id" in answer:
        submitted.sent_at[str(answer["id"])] = sent_wall
    else:
        submitted.errors += 1


def _session(api_key: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30),
        headers={"Authorization": f"Bearer {api_key}"},
    )


def submit_count(url: str, api_key: str, count: int, concurrency: int = 32) -> Submitted:
    """``count`` echo jobs, ``concurrency`` at a time."""
    submitted = Submitted()

    async def go() -> None:
        numbers = list(range(count))
        async with _session(api_key, concurrency) as client:

            async def worker() -> None:
                while numbers:
                    await _post(client, url, numbers.pop(), submitted)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(go())
    return submitted


def submit_steadily(url: str, api_key: str, per_second: float, seconds: float) -> Submitted:
    """Echo jobs at ``per_second`` for ``seconds``, each request started on its own schedule
    (a slow answer does not delay the next request)."""
    submitted = Submitted()

    async def go() -> None:
        total = max(1, int(per_second * seconds))
        async with _session(api_key, 256) as client:
            started = time.perf_counter()
            tasks = []
            for number in range(total):
                delay = started + number / per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(_post(client, url, number, submitted)))
            await asyncio.gather(*tasks)

    asyncio.run(go())
    return submitted
