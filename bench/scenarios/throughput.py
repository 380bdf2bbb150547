"""1. throughput: N deliveries to a fast receiver, then a steady run at half that rate, beside
the raw aiohttp and naive Celery reference senders."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.figures import speed
from bench.outbox import make_tenant, publish
from bench.references import naive_celery, raw_aiohttp, signed_bodies
from bench.stack import Bench
from bench.tally import attempts_logged, tally

PATH = "/fast/throughput"


def run(bench: Bench) -> dict[str, Any]:
    """A burst of deliveries from commit to receipt, the steady latency, and the references."""
    n = bench.sizes.deliveries
    tenant_id, callback_id, _ = make_tenant(bench, "throughput", PATH)
    assert callback_id is not None
    started = time.time()
    t0, created = publish(bench, [(tenant_id, callback_id)] * n)
    published = time.time() - started
    bench.receiver.wait_unique(PATH, n, timeout=60 + n / 40)
    counted = tally(bench, PATH, set(created))
    first = counted.pop("_first")
    last = max(first.values(), default=t0)
    latencies = [first[w] - created[w] for w in first if w in created]
    ours = {
        "deliveries": n,
        "delivery_processes": bench.args.delivery_processes,
        "in_flight_per_process": bench.settings.delivery_concurrency,
        "publish_seconds": round(published, 1),
        "seconds": round(last - t0, 2),
        **speed(len(first), last - t0, latencies),
        **counted,
        **attempts_logged(bench, tenant_id, len(first), 30),
    }
    # A burst's latency is mostly its own queue; the latency that matters is at a steady
    # rate the engine can sustain: half the burst rate, as the target puts it.
    ours["steady"] = steady(bench, tenant_id, callback_id, ours["per_second"] / 2)
    bodies = signed_bodies(bench, tenant_id, callback_id)
    raw = raw_aiohttp(bench, bodies[: bench.sizes.raw])
    naive = naive_celery(bench, bodies[: bench.sizes.naive])
    ours["x_raw"] = round(ours["per_second"] / raw["per_second"], 3) if raw["per_second"] else 0
    ours["x_naive"] = (
        round(ours["per_second"] / naive["per_second"], 3) if naive["per_second"] else 0
    )
    return {"boomerang": ours, "raw_aiohttp": raw, "naive_celery": naive}


def steady(
    bench: Bench, tenant_id: uuid.UUID, callback_id: uuid.UUID, per_second: float
) -> dict[str, Any]:
    """Publish at ``per_second`` in 20 ms ticks for ``steady_seconds``; latency from each
    commit to its receipt."""
    tick = 0.02
    seconds = bench.sizes.steady_seconds
    sent: dict[str, float] = {}
    owed = 0.0
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < seconds:
        owed += per_second * tick
        count, owed = int(owed), owed - int(owed)
        if count:
            sent.update(publish(bench, [(tenant_id, callback_id)] * count)[1])
        ticks += 1
        time.sleep(max(0.0, started + ticks * tick - time.monotonic()))
    bench.receiver.wait_unique(PATH, bench.sizes.deliveries + len(sent), timeout=60)
    counted = tally(bench, PATH, set(sent))
    first = counted.pop("_first")
    latencies = [first[w] - sent[w] for w in first if w in sent]
    return {
        "target_per_second": round(per_second, 1),
        "deliveries": len(sent),
        **speed(len(latencies), seconds, latencies),
        **{k: v for k, v in counted.items() if k in ("duplicates", "lost")},
    }
