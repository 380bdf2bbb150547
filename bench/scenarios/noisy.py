"""3. noisy: one tenant's callback never answers while another's gets K deliveries."""

from __future__ import annotations

import uuid
from typing import Any

from bench.figures import ms, percentile, rate
from bench.outbox import make_tenant, publish
from bench.stack import Bench
from bench.tally import attempts_logged, tally

HANG_PATH = "/hang/noisy"
GOOD_PATH = "/fast/noisy"


def run(bench: Bench) -> dict[str, Any]:
    """The healthy callback's rate and latency while the neighbour's requests hang."""
    k, h = bench.sizes.noisy, bench.sizes.hanging
    bad_tenant, bad_callback, _ = make_tenant(bench, "noisy-bad", HANG_PATH)
    good_tenant, good_callback, _ = make_tenant(bench, "noisy-good", GOOD_PATH)
    assert bad_callback is not None and good_callback is not None
    plan: list[tuple[uuid.UUID, uuid.UUID]] = []
    every = max(1, k // max(1, h))
    for number in range(k):
        if number % every == 0 and sum(1 for t, _ in plan if t == bad_tenant) < h:
            plan.append((bad_tenant, bad_callback))
        plan.append((good_tenant, good_callback))
    t0, published = publish(bench, plan)
    settings = bench.settings
    timeout = 60 + k / 10 + h * settings.total_timeout_seconds / 4
    try:
        bench.receiver.wait_unique(GOOD_PATH, k, timeout=timeout)
        healthy = {
            f"msg_{row[0].hex}"
            for row in bench.sql("SELECT id FROM message WHERE tenant_id = :t", t=good_tenant)
        }
        created = {wid: at for wid, at in published.items() if wid in healthy}
        counted = tally(bench, GOOD_PATH, set(created))
        first = counted.pop("_first")
        last = max(first.values(), default=t0)
        latencies = [first[w] - created[w] for w in first if w in created]
        hang = bench.receiver.stats(HANG_PATH)
        return {
            "healthy_deliveries": k,
            "hanging_deliveries": h,
            "read_timeout_s": settings.read_timeout_seconds,
            "total_timeout_s": settings.total_timeout_seconds,
            "healthy_seconds": round(last - t0, 2),
            "healthy_per_second": rate(len(first), last - t0),
            "healthy_p50_ms": ms(percentile(latencies, 0.5)),
            "healthy_p99_ms": ms(percentile(latencies, 0.99)),
            "hanging_requests_seen": hang["count"],
            **counted,
            **attempts_logged(bench, good_tenant, len(first), 30),
        }
    finally:
        # Park the neighbour so its retries do not leak into the next scenarios.
        bench.sql(
            "UPDATE delivery SET status = 'cancelled', next_attempt_at = NULL"
            " WHERE tenant_id = :t AND status = 'pending'",
            t=bad_tenant,
        )
