"""2. slow: M deliveries to a receiver that takes 0.5 s per request."""

from __future__ import annotations

from typing import Any

from bench.figures import speed
from bench.outbox import make_tenant, publish
from bench.stack import SLOW_SECONDS, Bench
from bench.tally import attempts_logged, tally

PATH = "/slow/slow"


def run(bench: Bench) -> dict[str, Any]:
    """How long until every delivery to the slow receiver arrived, beside the floor."""
    m = bench.sizes.slow
    tenant_id, callback_id, _ = make_tenant(bench, "slow", PATH)
    assert callback_id is not None
    t0, created = publish(bench, [(tenant_id, callback_id)] * m)
    # Requests one callback may have in flight across the delivery processes.
    settings = bench.settings
    threads = bench.args.delivery_processes * min(
        settings.delivery_concurrency, settings.callback_concurrency
    )
    bench.receiver.wait_unique(PATH, m, timeout=60 + m * SLOW_SECONDS / max(1, threads // 4))
    counted = tally(bench, PATH, set(created))
    first = counted.pop("_first")
    last = max(first.values(), default=t0)
    latencies = [first[w] - created[w] for w in first if w in created]
    return {
        "deliveries": m,
        "receiver_seconds_per_request": SLOW_SECONDS,
        "seconds_until_all_received": round(last - t0, 2),
        "in_flight_for_one_callback": threads,
        # The last request can arrive no sooner than this with every slot busy.
        "ideal_seconds_at_that_concurrency": round(
            -(-m // threads) * SLOW_SECONDS - SLOW_SECONDS, 2
        ),
        **speed(len(first), last - t0, latencies),
        **counted,
        **attempts_logged(bench, tenant_id, len(first), 30),
    }
