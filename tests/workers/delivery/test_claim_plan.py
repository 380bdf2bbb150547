"""The delivery claim's plan, made as a worker on a new database makes it: one generic plan per
connection (app/prepared.py), from a table Postgres has never analyzed, planned while the queue
is empty or once 6,000 keyed deliveries are due. The claim must walk the due index in order and
stop after the candidates it looks at, and each candidate's check for an earlier pending delivery
of its key must read one entry of the ordering index. Plans that read and sort every due
delivery, or walk the due index for each candidate, made each claim grow with the backlog (or
with its square).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.db import make_engine
from config.settings import Settings
from tests.support.settings import (
    database_name,
    drop_database,
    make_settings,
    recreate_database,
    worker_number,
)
from workers.celery_app import QUEUE_PLANNER
from workers.delivery.store import claim_deliveries

DUE = 6000
CLAIM = 100

_FILL = """
WITH tenant AS (
    INSERT INTO tenant (id, name, signing_secret) VALUES (gen_random_uuid(), 'plan', 'whsec')
    RETURNING id
), callback AS (
    INSERT INTO callback (id, tenant_id, url, event_types, enabled, secret)
    SELECT gen_random_uuid(), tenant.id, 'https://receiver.example/hook', '{}', true, 'whsec'
    FROM tenant
    RETURNING id, tenant_id, url
), message AS (
    INSERT INTO message (id, tenant_id, event_type, body, ordering_key)
    SELECT gen_random_uuid(), tenant.id, 'job.succeeded', '{}', 'job-' || n
    FROM tenant, generate_series(1, :due) AS n
    RETURNING id, seq, ordering_key
)
INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status, attempt_count,
                      next_attempt_at, ordering_key, ordering_seq)
SELECT gen_random_uuid(), callback.tenant_id, message.id, callback.id, callback.url, 'pending',
       0, now() - interval '1 second', message.ordering_key, message.seq
FROM callback, message
"""


@pytest.fixture
def new_database(worker_id: str) -> Iterator[Settings]:
    """A database just migrated, never analyzed: what a new installation starts with."""
    settings = make_settings(database_name("claim_plan", worker_number(worker_id)), redis_db=0)
    recreate_database(settings)
    yield settings
    drop_database(settings)


def scans(plan: dict) -> Iterator[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from scans(child)


# The connection plans its claim (once, from a table Postgres has never analyzed) while the
# queue is empty, or only once the backlog is there.
@pytest.mark.parametrize("planned_empty", [True, False], ids=["planned-empty", "planned-full"])
def test_a_claim_planned_on_a_new_database_walks_the_queue_head_and_looks_keys_up(
    new_database: Settings, planned_empty: bool
):
    engine = make_engine(new_database, server_settings=QUEUE_PLANNER)  # as the workers connect
    statements: list[tuple[str, dict]] = []

    def remember(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    try:
        with Session(engine) as session:
            if planned_empty:
                assert claim_deliveries(session, utcnow(), new_database, limit=CLAIM) == []
            session.execute(text(_FILL), {"due": DUE})
            session.commit()
            event.listen(engine, "before_cursor_execute", remember)
            claimed = claim_deliveries(session, utcnow(), new_database, limit=CLAIM)
            event.remove(engine, "before_cursor_execute", remember)
            assert len(claimed) == CLAIM  # each is the first of its key, so each may go
            session.rollback()

            execute, parameters = next(
                (statement, parameters)
                for statement, parameters in statements
                if statement.startswith("EXECUTE boomerang_claim_deliveries")
            )
            parameters = {**parameters, "now": utcnow() + timedelta(seconds=1)}
            (plan,) = (
                session.connection()
                .exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + execute, parameters)
                .one()
            )
            session.rollback()
    finally:
        engine.dispose()

    if isinstance(plan, str):
        plan = json.loads(plan)
    nodes = list(scans(plan[0]["Plan"]))
    lookups = [node for node in nodes if node.get("Alias") == "ahead"]
    assert lookups, "the claim no longer checks ordering keys"
    assert {node.get("Index Name") for node in lookups} == {"ix_delivery_ordering_pending"}
    # One index entry a candidate, and candidates only as far as the claim looks (four times
    # its size), not every due delivery.
    assert all(node["Actual Rows"] <= 1 for node in lookups)
    assert all(node["Actual Loops"] <= 4 * CLAIM for node in lookups)
    assert not [node for node in nodes if node["Node Type"].startswith("Bitmap")]
