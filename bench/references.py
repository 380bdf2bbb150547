"""The throughput scenario's reference points: the same signed bodies sent (a) by a raw aiohttp
client, as fast as it can, and (b) by a naive one-Celery-task-per-callback sender."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.figures import speed
from bench.stack import Bench
from bench.tally import tally
from tests.support import BIN


def signed_bodies(bench: Bench, tenant_id: uuid.UUID, callback_id: uuid.UUID) -> list[tuple]:
    """Each of the tenant's messages as (webhook-id, body, headers), signed as we sign them."""
    from app.signing import sign_webhook

    secret = bench.sql("SELECT secret FROM callback WHERE id = :c", c=callback_id)[0][0]
    rows = bench.sql("SELECT id, body FROM message WHERE tenant_id = :t", t=tenant_id)
    now = datetime.now(UTC)
    out = []
    for message_id, body in rows:
        wid = f"msg_{message_id.hex}"
        headers = {
            "content-type": "application/json",
            "webhook-id": wid,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign_webhook([secret], wid, now, body),
        }
        out.append((wid, body, headers))
    return out


def raw_aiohttp(bench: Bench, bodies: list[tuple]) -> dict[str, Any]:
    """(a) aiohttp POSTing the same signed bodies as fast as it can: no queue, no DB."""
    path = "/fast/raw"
    url = bench.receiver.url(path)
    concurrency = bench.args.raw_concurrency
    latencies: list[float] = []
    errors = 0

    async def go() -> float:
        nonlocal errors
        queue = list(reversed(bodies))
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

            async def worker() -> None:
                nonlocal errors
                while queue:
                    _wid, body, headers = queue.pop()
                    sent = time.perf_counter()
                    try:
                        async with client.post(url, data=body.encode(), headers=headers) as r:
                            await r.read()
                            if r.status != 201:
                                errors += 1
                    except (aiohttp.ClientError, TimeoutError):
                        errors += 1
                    latencies.append(time.perf_counter() - sent)

            t0 = time.time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return t0

    t0 = asyncio.run(go())
    counted = tally(bench, path, {wid for wid, _, _ in bodies})
    first = counted.pop("_first")
    last = max(first.values(), default=t0)
    return {
        "deliveries": len(bodies),
        "connections": concurrency,
        "seconds": round(last - t0, 2),
        **speed(len(first), last - t0, latencies),
        "latency_from": "request sent",
        "errors": errors,
        **counted,
    }


def naive_worker(concurrency: int, name: str) -> list[str]:
    """The command line of a prefork Celery worker on the naive app's own queue."""
    return [
        str(BIN / "celery"),
        "-A",
        "bench.naive.app",
        "worker",
        "-Q",
        "naive",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "WARNING",
        "-n",
        f"{name}@%h",
    ]


def naive_celery(bench: Bench, bodies: list[tuple]) -> dict[str, Any]:
    """(b) one Celery task per callback: requests.post, autoretry_for, an INSERT per attempt,
    on a prefork worker with its own queue and Redis database."""
    path = "/fast/naive"
    url = bench.receiver.url(path)
    broker = bench.stack.env["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    env = {"NAIVE_BROKER_URL": broker, "NAIVE_DATABASE_URL": bench.stack.database_url}
    concurrency = bench.args.naive_concurrency
    worker = bench.processes.start(
        "naive-worker", naive_worker(concurrency, f"naive-{os.getpid()}"), env
    )
    try:
        os.environ.update(env)
        from bench.naive.app import TASK
        from bench.naive.app import app as naive_app

        naive_app.conf.broker_url = broker
        wait_naive_ready(bench, naive_app, worker)
        sent_at: dict[str, float] = {}
        t0 = time.time()
        with naive_app.producer_or_acquire() as producer:
            for wid, body, headers in bodies:
                sent_at[wid] = time.time()
                naive_app.send_task(
                    TASK, args=(url, body, headers), queue="naive", producer=producer
                )
        bench.receiver.wait_unique(path, len(bodies), timeout=60 + len(bodies) / 20)
        counted = tally(bench, path, set(sent_at))
        first = counted.pop("_first")
        last = max(first.values(), default=t0)
        latencies = [first[w] - sent_at[w] for w in first if w in sent_at]
        deadline = time.monotonic() + 30
        logged = 0
        while time.monotonic() < deadline:
            logged = bench.sql("SELECT count(*) FROM naive_attempt")[0][0]
            if logged >= len(first):
                break
            time.sleep(0.2)
        return {
            "deliveries": len(bodies),
            "prefork_processes": concurrency,
            "seconds": round(last - t0, 2),
            **speed(len(first), last - t0, latencies),
            "latency_from": "task sent",
            **counted,
            "attempts_logged": logged,
        }
    finally:
        bench.processes.stop("naive-worker")


def wait_naive_ready(bench: Bench, naive_app: Any, worker: Any) -> None:
    """Block until the naive worker answers a ping; fail if it exits or takes over 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError("naive worker exited:\n" + bench.processes.log("naive-worker"))
        try:
            if naive_app.control.ping(timeout=0.5):
                return
        except Exception:  # the broker may not answer yet; the deadline decides
            pass
        time.sleep(0.3)
    raise RuntimeError("naive worker not ready after 60 s")
