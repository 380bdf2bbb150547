"""7. dead: many dead receivers beside a healthy one, through the API.

First a healthy tenant's H jobs alone; then T tenants whose callbacks hold every connection until
our timeout submit J jobs each, and the healthy tenant's H jobs go again. Latency is from each
job's request to its callback's arrival; the healthy tenant's p99 beside the dead ones should stay
within a second of its p99 alone.
"""

from __future__ import annotations

from typing import Any

from bench.api_client import Submitted, submit_count
from bench.figures import ms, percentile
from bench.outbox import make_tenant
from bench.stack import Bench
from bench.tally import submit_to_arrival

HEALTHY_PATH = "/fast/dead-neighbours"


def run(bench: Bench) -> dict[str, Any]:
    """The healthy tenant's latency alone, then beside the dead receivers."""
    sizes = bench.sizes
    jobs_url = bench.stack.base_url + "/v1/jobs"
    healthy_id, _, healthy_key = make_tenant(bench, "healthy", HEALTHY_PATH)
    alone = healthy_round(
        bench, healthy_id, submit_count(jobs_url, healthy_key, sizes.healthy_jobs)
    )

    dead = [make_tenant(bench, f"dead-{n}", f"/hang/dead-{n}") for n in range(sizes.dead_tenants)]
    for _, _, key in dead:
        submit_count(jobs_url, key, sizes.dead_jobs)
    beside = healthy_round(
        bench, healthy_id, submit_count(jobs_url, healthy_key, sizes.healthy_jobs)
    )
    hanging = sum(bench.receiver.stats(f"/hang/dead-{n}")["count"] for n in range(len(dead)))
    # Park the dead receivers' work so its retries do not leak into the next scenarios.
    bench.sql(
        "UPDATE delivery SET status = 'cancelled', next_attempt_at = NULL"
        " WHERE tenant_id = ANY(:t) AND status = 'pending'",
        t=[tenant_id for tenant_id, _, _ in dead],
    )
    return {
        "dead_tenants": sizes.dead_tenants,
        "jobs_per_dead_tenant": sizes.dead_jobs,
        "healthy_jobs": sizes.healthy_jobs,
        "total_timeout_s": bench.settings.total_timeout_seconds,
        "alone": alone,
        "beside_dead": beside,
        "dead_requests_seen": hanging,
        "p99_beside_minus_alone_ms": round(beside["p99_ms"] - alone["p99_ms"], 1),
    }


def healthy_round(bench: Bench, tenant_id: Any, submitted: Submitted) -> dict[str, Any]:
    """Wait for the submitted jobs' callbacks; their latency from request to arrival."""
    total = bench.sql("SELECT count(*) FROM job WHERE tenant_id = :t", t=tenant_id)[0][0]
    timeout = 60 + 2 * bench.settings.total_timeout_seconds
    bench.receiver.wait_unique(HEALTHY_PATH, total, timeout=timeout)
    ids = {
        str(job_id): f"msg_{message_id.hex}"
        for job_id, message_id in bench.sql(
            "SELECT job_id, id FROM message WHERE tenant_id = :t", t=tenant_id
        )
    }
    counted, latencies = submit_to_arrival(bench, HEALTHY_PATH, submitted.sent_at, ids)
    return {
        "jobs": len(submitted.sent_at),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(max(latencies, default=0.0)),
        "duplicates": counted["duplicates"],
        "lost": counted["lost"],
    }
