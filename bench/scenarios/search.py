"""search: the delivery log searched as ``GET /v1/deliveries`` searches it, over N attempts (four
a delivery, over the last week, most of them one busy tenant's), each filter's first page timed
by Postgres (EXPLAIN ANALYZE) with the indexes of migration 0016 and, in the same run, with the
ones before it (dropped and made in a transaction that is rolled back). The plans go into the
JSON report."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.dialects import postgresql

from app.models import Delivery, DeliveryStatus
from app.services.deliveries import DeliverySearch, search_statement
from bench.outbox import make_tenant
from bench.stack import Bench

ATTEMPTS_PER_DELIVERY = 4
CALLBACKS = 20
DAYS = 7
TYPES = ("invoice.paid", "invoice.declined", "user.created", "user.deleted", "order.placed")
# The busy tenant's share of the log; the rest is another tenant's.
BUSY_SHARE = 0.8
PAGE = 50

# One message and one delivery per n, the busy tenant's n < busy; every fifth is a job's event.
_FILL = """
WITH jobs AS (
    INSERT INTO job (id, tenant_id, type, status, input, attempts, max_attempts)
    SELECT md5('search-job-' || n)::uuid, CASE WHEN n < :busy THEN :t ELSE :o END, 'echo',
           'succeeded', '{}', 1, 3
    FROM generate_series(:start, :stop - 1) AS n WHERE n % 5 = 0
), messages AS (
    INSERT INTO message (id, tenant_id, job_id, event_type, body, created_at)
    SELECT md5('search-message-' || n)::uuid, CASE WHEN n < :busy THEN :t ELSE :o END,
           CASE WHEN n % 5 = 0 THEN md5('search-job-' || n)::uuid END,
           CASE WHEN n % 5 = 0 THEN 'job.succeeded'
                ELSE (CAST(:types AS text[]))[1 + n % cardinality(CAST(:types AS text[]))] END,
           '{}', :oldest + (n * :spread) * interval '1 millisecond'
    FROM generate_series(:start, :stop - 1) AS n
)
INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status, attempt_count,
                      created_at)
SELECT md5('search-delivery-' || n)::uuid, CASE WHEN n < :busy THEN :t ELSE :o END,
       md5('search-message-' || n)::uuid,
       CASE WHEN n < :busy
            THEN (CAST(:callbacks AS uuid[]))[1 + n % cardinality(CAST(:callbacks AS uuid[]))]
            ELSE :oc END,
       'http://127.0.0.1:1/search',
       -- Most succeed; one in 50 failed for good, one in 200 is still on its way.
       CASE WHEN n % 50 = 7 THEN 'failed' WHEN n % 200 = 3 THEN 'pending' ELSE 'succeeded' END,
       4, :oldest + (n * :spread) * interval '1 millisecond'
FROM generate_series(:start, :stop - 1) AS n
"""
# Three failed tries (a 503, a timeout, a 500) before the last: a 200, or a 410 for the failed.
_ATTEMPTS = """
INSERT INTO delivery_attempt (id, delivery_id, attempted_at, request_headers, response_status,
    response_body, response_body_truncated, duration_ms, succeeded, error)
SELECT gen_random_uuid(), md5('search-delivery-' || n)::uuid,
       :oldest + (n * :spread + try * 1000) * interval '1 millisecond', '{}'::jsonb,
       CASE try WHEN 0 THEN 503 WHEN 1 THEN NULL WHEN 2 THEN 500
                ELSE CASE WHEN n % 50 = 7 THEN 410 ELSE 200 END END,
       '', false, 40, try = 3 AND n % 50 <> 7,
       CASE WHEN try = 1 THEN 'timed out' END
FROM generate_series(:start, :stop - 1) AS n, generate_series(0, 3) AS try
"""
CHUNK = 50_000

# The indexes before migration 0016, for the same run's comparison.
_BEFORE_0016 = """
DROP INDEX ix_delivery_tenant_newest;
DROP INDEX ix_delivery_callback_newest;
DROP INDEX ix_message_tenant_type;
CREATE INDEX ix_delivery_tenant_id ON delivery (tenant_id);
CREATE INDEX ix_delivery_callback_id ON delivery (callback_id);
"""


def run(bench: Bench) -> dict[str, Any]:
    """Fill the log, then time each filter's first page with today's indexes and the old ones."""
    attempts = bench.sizes.search_attempts
    deliveries = max(attempts // ATTEMPTS_PER_DELIVERY, 10)
    filled = time.monotonic()
    tenant_id, callback_ids, sample = fill(bench, deliveries)
    fill_seconds = time.monotonic() - filled
    searches = _searches(callback_ids, sample)
    with bench.engine.connect() as conn:
        now = _explained(conn, tenant_id, searches)
        conn.rollback()
        # The same searches on the indexes before migration 0016, undone by the rollback.
        for statement in _BEFORE_0016.strip().split(";\n"):
            conn.execute(text(statement))
        conn.execute(text("ANALYZE delivery"))
        before = _explained(conn, tenant_id, searches)
        conn.rollback()
    figures: dict[str, Any] = {
        "attempts": deliveries * ATTEMPTS_PER_DELIVERY,
        "deliveries": deliveries,
        "fill_seconds": round(fill_seconds, 1),
    }
    for name in searches:
        figures[name] = {
            "ms": now[name]["ms"],
            "rows": now[name]["rows"],
            "before_0016_ms": before[name]["ms"],
            "same_rows_before_0016": before[name]["ids"] == now[name]["ids"],
            "x_before": round(before[name]["ms"] / now[name]["ms"], 1) if now[name]["ms"] else 0,
            "plan": now[name]["plan"],
            "plan_before_0016": before[name]["plan"],
        }
    return figures


def fill(bench: Bench, deliveries: int) -> tuple[uuid.UUID, list[uuid.UUID], dict[str, Any]]:
    """The log, committed and analysed; the busy tenant, its callbacks and ids to search for."""
    from app.services.attempt_partitions import create_partition, day_partitions

    tenant_id, _, _ = make_tenant(bench, "search", None)
    other_id, other_callback, _ = make_tenant(bench, "search-other", "/search")
    callback_ids = [
        row[0]
        for row in bench.sql(
            "INSERT INTO callback (id, tenant_id, url, event_types, enabled, secret) "
            "SELECT gen_random_uuid(), :t, 'http://127.0.0.1:1/search/' || n, "
            "'{job.succeeded}', true, 'whsec_' || repeat('A', 32) "
            "FROM generate_series(1, :n) AS n RETURNING id",
            t=tenant_id,
            n=CALLBACKS,
        )
    ]
    now = datetime.now(UTC)
    oldest = (now - timedelta(days=DAYS)).replace(microsecond=0)
    spread = DAYS * 86_400_000 // deliveries  # milliseconds between two deliveries
    with bench.session_factory() as session:
        for day in range(DAYS + 2):
            date = (oldest + timedelta(days=day)).date()
            if date not in day_partitions(session):
                create_partition(session, date)
                session.commit()
    busy = int(deliveries * BUSY_SHARE)
    for start in range(0, deliveries, CHUNK):
        stop = min(deliveries, start + CHUNK)
        common = {"start": start, "stop": stop, "oldest": oldest, "spread": spread}
        bench.sql(
            _FILL,
            t=tenant_id,
            o=other_id,
            oc=other_callback,
            busy=busy,
            types=list(TYPES),
            callbacks=[str(c) for c in callback_ids],
            **common,
        )
        bench.sql(_ATTEMPTS, **common)
    with bench.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("job", "message", "delivery", "delivery_attempt"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    middle = busy // 2
    sample = {
        "message_id": bench.sql("SELECT md5('search-message-' || :n)::uuid", n=middle + 1)[0][0],
        "job_id": bench.sql("SELECT md5('search-job-' || :n)::uuid", n=middle - middle % 5)[0][0],
        "day": oldest + timedelta(days=DAYS // 2),
    }
    return tenant_id, callback_ids, sample


def _searches(callback_ids: list[uuid.UUID], sample: dict[str, Any]) -> dict[str, DeliverySearch]:
    day = sample["day"]
    return {
        "everything": DeliverySearch(),
        "callback": DeliverySearch(callback_id=callback_ids[0]),
        "status_failed": DeliverySearch(status=DeliveryStatus.FAILED),
        "status_pending": DeliverySearch(status=DeliveryStatus.PENDING),
        "event_type": DeliverySearch(event_type="user.deleted"),
        "event_type_wildcard": DeliverySearch(event_type="invoice.*"),
        "webhook_id": DeliverySearch(message_id=sample["message_id"]),
        "job_id": DeliverySearch(job_id=sample["job_id"]),
        "one_day": DeliverySearch(since=day, until=day + timedelta(days=1)),
        "response_4xx": DeliverySearch(response="4xx"),
        # The callback whose turn falls on the failed ones (n % 50 = 7).
        "callback_failed_4xx": DeliverySearch(
            callback_id=callback_ids[7], status=DeliveryStatus.FAILED, response="4xx"
        ),
    }


def _explained(
    conn: Connection, tenant_id: uuid.UUID, searches: dict[str, DeliverySearch]
) -> dict[str, dict[str, Any]]:
    """Each search's first page as the API asks for it, run under EXPLAIN ANALYZE."""
    results = {}
    for name, search in searches.items():
        statement = (
            search_statement(tenant_id, search)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(PAGE + 1)
        )
        literal = statement.compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        plan = [row[0] for row in conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {literal}"))]
        ids = [row.id for row in conn.execute(statement)]
        results[name] = {"ms": _execution_ms(plan), "rows": len(ids), "ids": ids, "plan": plan}
    return results


def _execution_ms(plan: list[str]) -> float:
    line = next(line for line in plan if line.startswith("Execution Time:"))
    return round(float(line.split(":")[1].split()[0]), 2)
