"""retention: R attempts past retention, in the daily partitions of the attempt log and in a copy
shaped as the log was before it was partitioned; one retention pass over each (dropping the
days, against deleting the rows in batches as the prune task did), with its time and the WAL it
wrote."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.outbox import make_tenant
from bench.stack import Bench

DAYS = 5
# The rows are this old and the pass's own retention is CUTOFF_DAYS, so the stack's own prune
# (beat, at BOOMERANG_RETENTION_DAYS = 30) never takes them from under the measurement.
AGE_DAYS = 10
CUTOFF_DAYS = 7
DELIVERIES = 10_000
CHUNK = 500_000
BODY = '{"ok":true}'
BEFORE = "bench_attempt_log_unpartitioned"

_DELIVERIES = """
WITH m AS (
    INSERT INTO message (id, tenant_id, event_type, body)
    SELECT md5('retention-message-' || n)::uuid, :t, 'job.succeeded', '{}'
    FROM generate_series(0, :k - 1) AS n RETURNING id
)
INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status, attempt_count)
SELECT md5('retention-delivery-' || n)::uuid, :t, md5('retention-message-' || n)::uuid, :c,
    'http://127.0.0.1:1/retention', 'succeeded', 1
FROM generate_series(0, :k - 1) AS n
"""
# What the delivery worker logs for a 200: the signed request's headers (signature redacted),
# the receiver's answer, spread over the day.
_FILL = """
INSERT INTO delivery_attempt (id, delivery_id, attempted_at, request_headers, response_status,
    response_headers, response_body, response_body_truncated, duration_ms, succeeded)
SELECT gen_random_uuid(), md5('retention-delivery-' || (n % :k))::uuid,
    :day + (n % 86400000) * interval '1 millisecond',
    jsonb_build_object('content-type', 'application/json', 'user-agent', 'Boomerang/1',
        'webhook-id', 'msg_' || md5(n::text), 'webhook-timestamp', '1764633600',
        'webhook-signature', '<redacted>'),
    200, '{"Content-Type": "application/json", "Content-Length": "11"}'::jsonb,
    :body, false, 20 + n % 180, true
FROM generate_series(:start, :stop - 1) AS n
"""
# The attempt log as migrations 0001 and 0002 made it.
_BEFORE_TABLE = f"""
CREATE TABLE {BEFORE} (LIKE delivery_attempt INCLUDING DEFAULTS);
ALTER TABLE {BEFORE} ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (delivery_id) REFERENCES delivery (id) ON DELETE CASCADE;
CREATE INDEX ON {BEFORE} (delivery_id);
CREATE INDEX ON {BEFORE} (attempted_at)
"""
# The batched DELETE the prune task ran on that table.
_DELETE_BATCH = f"""
DELETE FROM {BEFORE} WHERE id IN (
    SELECT id FROM {BEFORE} WHERE attempted_at < :cutoff LIMIT :batch)
"""


def run(bench: Bench) -> dict[str, Any]:
    """Fill, copy, then time one retention pass over each, with the WAL each wrote."""
    rows = bench.sizes.retention_rows
    now = datetime.now(UTC)
    days = [
        (now - timedelta(days=AGE_DAYS + n)).replace(hour=0, minute=0, second=0, microsecond=0)
        for n in range(DAYS)
    ]
    filled = time.monotonic()
    fill(bench, rows, days)
    fill_seconds = time.monotonic() - filled
    size_mb = bench.sql(f"SELECT pg_total_relation_size('{BEFORE}')")[0][0] / 2**20
    cutoff = now - timedelta(days=CUTOFF_DAYS)

    def delete_in_batches() -> dict[str, Any]:
        batch = bench.settings.prune_batch_size
        statements = deleted = 0
        while True:
            count = rowcount(bench, _DELETE_BATCH, cutoff=cutoff, batch=batch)
            statements += 1
            deleted += count
            if count < batch:
                return {"rows": deleted, "statements": statements}

    def drop_partitions() -> dict[str, Any]:
        from app.services.attempt_partitions import prune_default_batch
        from workers.tasks import maintain_attempt_partitions

        with bench.session_factory() as session:
            settings = bench.settings.replace(retention_days=CUTOFF_DAYS)
            totals = maintain_attempt_partitions(session, now, settings)
            # The rest of the pass: what the DEFAULT partition holds past the cutoff (nothing).
            totals["default_rows"] = prune_default_batch(
                session, cutoff, bench.settings.prune_batch_size
            )
            session.commit()
        return totals

    before = measured(bench, delete_in_batches)
    after = measured(bench, drop_partitions)
    left = bench.sql(
        f"SELECT (SELECT count(*) FROM {BEFORE}), "
        "(SELECT count(*) FROM delivery_attempt WHERE attempted_at < :cutoff)",
        cutoff=cutoff,
    )[0]
    bench.sql(f"DROP TABLE {BEFORE}")
    return {
        "rows": rows,
        "days": DAYS,
        "table_mb": round(size_mb),
        "fill_seconds": round(fill_seconds, 1),
        "batched_delete": before,
        "partition_drop": after,
        "x_faster": ratio(before["seconds"], after["seconds"]),
        "x_less_wal": ratio(before["wal_bytes"], after["wal_bytes"]),
        "rows_left_before": left[0],
        "rows_left_partitioned": left[1],
    }


def fill(bench: Bench, rows: int, days: list[datetime]) -> None:
    """The same rows in the partitioned log and in a copy shaped as the log was before."""
    from app.services.attempt_partitions import create_partition, day_partitions

    tenant_id, callback_id, _ = make_tenant(bench, "retention", None)
    bench.sql(_DELIVERIES, t=tenant_id, c=callback_id, k=DELIVERIES)
    with bench.session_factory() as session:
        for day in days:
            if day.date() not in day_partitions(session):
                create_partition(session, day.date())
                session.commit()
    per_day = rows // len(days)
    for index, day in enumerate(days):
        count = per_day if index < len(days) - 1 else rows - per_day * index
        for start in range(0, count, CHUNK):
            bench.sql(
                _FILL, k=DELIVERIES, day=day, body=BODY, start=start, stop=min(count, start + CHUNK)
            )
    bench.sql(_BEFORE_TABLE)
    oldest, newest = days[-1], days[0] + timedelta(days=1)
    bench.sql(
        f"INSERT INTO {BEFORE} SELECT * FROM delivery_attempt "
        "WHERE attempted_at >= :oldest AND attempted_at < :newest",
        oldest=oldest,
        newest=newest,
    )
    # Rows past retention have long been vacuumed in production; so are these.
    with bench.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {BEFORE}"))
        conn.execute(text("VACUUM ANALYZE delivery_attempt"))


def rowcount(bench: Bench, statement: str, **params: Any) -> int:
    """Run one DML statement, committed; how many rows it touched."""
    with bench.engine.begin() as conn:
        return conn.execute(text(statement), params).rowcount


def measured(bench: Bench, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``step`` after a checkpoint (so both pay the same full-page writes) and add its
    seconds and the WAL the whole server wrote meanwhile."""
    bench.sql("CHECKPOINT")
    start_lsn = bench.sql("SELECT pg_current_wal_lsn()")[0][0]
    started = time.monotonic()
    figures = step()
    seconds = time.monotonic() - started
    wal = bench.sql(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:start AS pg_lsn))", start=start_lsn
    )[0][0]
    return {**figures, "seconds": round(seconds, 3), "wal_bytes": int(wal)}


def ratio(slow: float, fast: float) -> float:
    """How many times ``fast`` goes into ``slow``."""
    return round(slow / fast, 1) if fast > 0 else 0.0
