"""Many web clients in one process of their own: job event streams (SSE) or long polls, held
open until told to report. The stream scenario runs it so that the clients' sockets and CPU are
not the benchmark's own.

    python -m bench.stream_clients --kind sse --jobs jobs.txt

Each line of the jobs file is ``<job id> <url>``. Once every client is connected (an SSE stream
has sent the job's state; a long poll has read the job's ETag and is waiting with it) it prints
one JSON line ``{"connected": n, "failed": m}``. Each line then read from stdin prints a report:
how many are still open, how many ended, and the wall-clock time at which each ended client saw
its job end.
End of input closes every client and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

import aiohttp

from app.stream.server import raise_open_files_limit

CONNECTING_AT_ONCE = 200
STATE = b"event: job.state"
TERMINAL = (b"event: job.succeeded", b"event: job.failed")


@dataclass
class Clients:
    connected: int = 0
    failed: int = 0
    open: int = 0
    errors: list[str] = field(default_factory=list)
    ended_at: dict[str, float] = field(default_factory=dict)  # job id -> unix time

    def fail(self, error: BaseException | str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(str(error) or type(error).__name__)


async def sse(
    session: aiohttp.ClientSession,
    job_id: str,
    url: str,
    clients: Clients,
    connected: asyncio.Event,
) -> None:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                clients.fail(f"HTTP {response.status}")
                return
            first = True
            async for line in response.content:
                line = line.rstrip(b"\n")
                if first and line == STATE:
                    clients.connected += 1
                    clients.open += 1
                    first = False
                    connected.set()
                if line in TERMINAL:
                    clients.ended_at[job_id] = time.time()
        if not first:
            clients.open -= 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        clients.fail(exc)


async def long_poll(
    session: aiohttp.ClientSession,
    job_id: str,
    url: str,
    clients: Clients,
    connected: asyncio.Event,
) -> None:
    try:
        async with session.get(url) as response:
            etag = response.headers.get("ETag", "")
            if response.status != 200 or not etag:
                clients.fail(f"HTTP {response.status}")
                return
        clients.connected += 1
        clients.open += 1
        connected.set()
        async with session.get(f"{url}&wait=60", headers={"If-None-Match": etag}) as response:
            await response.read()
            if response.status == 200:
                clients.ended_at[job_id] = time.time()
        clients.open -= 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        clients.fail(exc)


async def main(kind: str, jobs_file: str) -> None:
    with open(jobs_file) as lines:
        jobs = [line.split() for line in lines if line.strip()]
    clients = Clients()
    client = sse if kind == "sse" else long_poll
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(job_id: str, url: str) -> None:
            connected = asyncio.Event()
            async with gate:
                task = asyncio.create_task(client(session, job_id, url, clients, connected))
                # The next client connects once this one has, or has given up.
                waiting = asyncio.create_task(connected.wait())
                await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
            await task

        tasks = [asyncio.create_task(one(job_id, url)) for job_id, url in jobs]
        while clients.connected + clients.failed < len(jobs):
            await asyncio.sleep(0.05)
        # A long poll is waiting once its request has gone out with the ETag; give it a moment.
        await asyncio.sleep(0.5)
        print(json.dumps({"connected": clients.connected, "failed": clients.failed}), flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(
                json.dumps(
                    {
                        "open": clients.open,
                        "ended": len(clients.ended_at),
                        "failed": clients.failed,
                        "errors": clients.errors,
                        "ended_at": clients.ended_at,
                    }
                ),
                flush=True,
            )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("sse", "poll"), required=True)
    parser.add_argument("--jobs", required=True, help="a file of '<job id> <url>' lines")
    args = parser.parse_args()
    raise_open_files_limit()
    asyncio.run(main(args.kind, args.jobs))
