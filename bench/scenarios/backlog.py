"""5. backlog: B deliveries waiting for a retry: worker memory, the sweep's and the claim's time,
the Redis queue length; then some made due must arrive."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psutil
import redis
from sqlalchemy import text

from bench.figures import ms
from bench.outbox import make_tenant
from bench.stack import Bench
from bench.tally import tally

PATH = "/fast/backlog"
# One failed attempt each, a retry due in an hour: what a receiver outage leaves behind.
_INSERT_BACKLOG = """
WITH m AS (
    INSERT INTO message (id, tenant_id, event_type, body, created_at)
    SELECT gen_random_uuid(), :t, 'job.succeeded', :body, now()
    FROM generate_series(1, :n) RETURNING id
), d AS (
    INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status,
        attempt_count, next_attempt_at, last_attempt_at, created_at)
    SELECT gen_random_uuid(), :t, m.id, :c, :url, 'pending', 1,
        now() + interval '1 hour' + random() * interval '1 hour', now(), now()
    FROM m RETURNING id
)
INSERT INTO delivery_attempt (id, delivery_id, attempted_at, request_headers,
    response_status, response_body_truncated, duration_ms, succeeded, error)
SELECT gen_random_uuid(), d.id, now(), '{}'::jsonb, 503, false, 12, false,
    'receiver answered 503'
FROM d
"""
_MAKE_DUE = text(
    "UPDATE delivery SET next_attempt_at = now() - interval '1 second'"
    " WHERE id IN (SELECT id FROM delivery WHERE tenant_id = :t LIMIT :n) RETURNING id"
)


def run(bench: Bench) -> dict[str, Any]:
    """Memory, Redis and query times with the backlog in Postgres, then a due batch's arrival."""
    from workers.delivery.store import claim_deliveries, has_due_deliveries

    b = bench.sizes.backlog
    tenant_id, callback_id, _ = make_tenant(bench, "backlog", PATH)
    worker = psutil.Process(bench.stack.processes["deliveries"].pid)
    rss_before = rss(worker)
    body = json.dumps(
        {"type": "job.succeeded", "timestamp": datetime.now(UTC).isoformat(), "data": {}}
    )
    inserted = time.monotonic()
    for start in range(0, b, 20_000):
        bench.sql(
            _INSERT_BACKLOG,
            t=tenant_id,
            c=callback_id,
            url=bench.receiver.url(PATH),
            body=body,
            n=min(20_000, b - start),
        )
    insert_seconds = time.monotonic() - inserted
    bench.sql("ANALYZE delivery")
    # Let beat sweep a few times over the backlog before looking at memory and Redis.
    time.sleep(3 * bench.settings.sweep_interval_seconds + 1)
    rss_after = rss(worker)
    broker = redis.Redis.from_url(bench.stack.env["REDIS_URL"])
    queued = broker.llen("deliveries")

    due = min(bench.sizes.due_batch, b)

    def timed(step: Callable[[Any], Any], with_due: bool) -> tuple[float, Any]:
        # Rolled back, and with the due rows made due only inside this transaction, so no
        # real drain can take them first; afterwards they are made due for the stack.
        with bench.session_factory() as session:
            if with_due:
                session.execute(_MAKE_DUE, {"t": tenant_id, "n": due})
            started = time.perf_counter()
            result = step(session)
            elapsed = time.perf_counter() - started
            session.rollback()
            return elapsed, result

    def sweep(session: Any) -> bool:
        return has_due_deliveries(session, datetime.now(UTC))

    def claim(session: Any) -> int:
        batch = bench.settings.delivery_batch_size
        return len(claim_deliveries(session, datetime.now(UTC), bench.settings, limit=batch))

    idle = [timed(sweep, False)[0] for _ in range(5)]
    idle_claim = [timed(claim, False)[0] for _ in range(5)]
    due_sweep = [timed(sweep, True)[0] for _ in range(5)]
    claims = [timed(claim, True) for _ in range(5)]
    due_ids = bench.sql(_MAKE_DUE.text, t=tenant_id, n=due)
    # Now leave them to the beat sweep, which wakes a drain.
    expected = {
        f"msg_{row[0].hex}"
        for row in bench.sql(
            "SELECT message_id FROM delivery WHERE id = ANY(:ids)", ids=[r[0] for r in due_ids]
        )
    }
    bench.receiver.wait_unique(PATH, len(expected), timeout=60 + due / 20)
    counted = tally(bench, PATH, expected)
    counted.pop("_first")
    queued_after = broker.llen("deliveries")
    broker.close()
    return {
        "backlog": b,
        "insert_seconds": round(insert_seconds, 1),
        "delivery_worker_rss_mb_before": round(rss_before / 2**20, 1),
        "delivery_worker_rss_mb_after": round(rss_after / 2**20, 1),
        "redis_deliveries_llen": queued,
        "sweep_nothing_due_ms": ms(statistics.median(idle)),
        "claim_nothing_due_ms": ms(statistics.median(idle_claim)),
        "made_due": due,
        "sweep_due_ms": ms(statistics.median(due_sweep)),
        "claim_due_batch": claims[0][1],
        "claim_due_ms": ms(statistics.median(seconds for seconds, _ in claims)),
        "redis_deliveries_llen_after_due": queued_after,
        **{f"due_{key}": value for key, value in counted.items()},
    }


def rss(process: psutil.Process) -> int:
    """Resident memory of the process and all its children, in bytes."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total
