"""Work for the scenarios, made the way the service makes it: tenants and callbacks through the
services, and finished jobs with their messages and pending deliveries as the outbox writes them,
then one wake."""

from __future__ import annotations

import time
import uuid

from bench.stack import Bench

# Jobs, messages and deliveries as the outbox writes them (keyed by the job, as job events are);
# ``ord`` keeps the plan's order in the queue (a delivery is claimed oldest-due first).
_PUBLISH = """
WITH plan AS (
    SELECT p.tenant_id, p.callback_id, p.ord,
           gen_random_uuid() AS job_id, gen_random_uuid() AS message_id
    FROM unnest(CAST(:tenants AS uuid[]), CAST(:callbacks AS uuid[]))
         WITH ORDINALITY AS p(tenant_id, callback_id, ord)
), jobs AS (
    INSERT INTO job (id, tenant_id, type, status, input, result, attempts, max_attempts,
                     started_at, finished_at, created_at)
    SELECT job_id, tenant_id, 'echo', 'succeeded', jsonb_build_object('n', ord),
           jsonb_build_object('n', ord), 1, 3, now(), now(), now()
    FROM plan
), messages AS (
    INSERT INTO message (id, tenant_id, job_id, event_type, body, created_at, ordering_key)
    SELECT message_id, tenant_id, job_id, 'job.succeeded',
           json_build_object(
               'type', 'job.succeeded', 'timestamp', now(),
               'data', json_build_object(
                   'id', job_id, 'type', 'echo', 'status', 'succeeded',
                   'input', json_build_object('n', ord), 'result', json_build_object('n', ord),
                   'error', NULL, 'finished_at', now()))::text,
           now(), job_id::text
    FROM plan
    RETURNING id, seq
)
INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status, attempt_count,
                      next_attempt_at, created_at, ordering_key, ordering_seq)
SELECT gen_random_uuid(), plan.tenant_id, plan.message_id, plan.callback_id, callback.url,
       'pending', 0, now() + plan.ord * interval '1 microsecond', now(),
       plan.job_id::text, messages.seq
FROM plan JOIN callback ON callback.id = plan.callback_id
     JOIN messages ON messages.id = plan.message_id
RETURNING message_id
"""


def make_tenant(
    bench: Bench, name: str, path: str | None
) -> tuple[uuid.UUID, uuid.UUID | None, str]:
    """A tenant, with a callback to ``path`` on the receiver; (tenant, callback, api key)."""
    from app.services.callbacks import create_callback
    from app.services.tenants import create_tenant

    with bench.session_factory() as session:
        created = create_tenant(session, name)
        callback_id = None
        if path is not None:
            callback = create_callback(
                session, created.tenant, {"url": bench.receiver.url(path)}, bench.settings
            )
            callback_id = callback.id
        session.commit()
        return created.tenant.id, callback_id, created.api_key


def publish(
    bench: Bench, plan: list[tuple[uuid.UUID, uuid.UUID]]
) -> tuple[float, dict[str, float]]:
    """For each (tenant, callback), in order: a finished echo job, its job.succeeded message
    and a pending delivery, written in one statement and committed, then one wake, as the
    outbox sends after a commit. (The ORM outbox costs the publisher about 3 ms a job; this
    measures delivery, not this process.) The commit time, and each webhook-id's."""
    rows = bench.sql(
        _PUBLISH,
        tenants=[str(tenant) for tenant, _ in plan],
        callbacks=[str(callback) for _, callback in plan],
    )
    committed = time.time()
    bench.producer.deliveries.wake()
    return committed, {f"msg_{row[0].hex}": committed for row in rows}


def created_at(bench: Bench, tenant_id: uuid.UUID) -> dict[str, float]:
    """When each of the tenant's messages was made, by webhook-id."""
    rows = bench.sql(
        "SELECT id, extract(epoch FROM created_at) FROM message WHERE tenant_id = :t",
        t=tenant_id,
    )
    return {f"msg_{row[0].hex}": float(row[1]) for row in rows}
