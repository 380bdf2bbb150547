"""Leasing due deliveries in batches: order, the per-callback cap, and concurrent claimers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Delivery, DeliveryAttempt, DeliveryStatus, Message, Tenant
from tests.factories import make_callback, make_delivery, make_tenant
from workers.delivery.http import ErrorKind, HttpResult
from workers.delivery.lanes import LaneLimits
from workers.delivery.store import (
    AttemptRecord,
    claim_deliveries,
    lane_of,
    record_attempts,
)


def deliveries_to(session: Session, callback, count: int, now: datetime) -> list[Delivery]:
    made = []
    for number in range(count):
        made.append(make_delivery(session, callback, now - timedelta(seconds=count - number)))
    return made


def outcome(now: datetime, succeeded: bool = True) -> AttemptRecord:
    return AttemptRecord(
        attempted_at=now,
        request_headers={},
        response_status=200 if succeeded else 500,
        response_headers={},
        response_body="",
        response_body_truncated=False,
        duration_ms=3,
        succeeded=succeeded,
        error=None if succeeded else "receiver answered 500",
        next_attempt_at=None if succeeded else now + timedelta(seconds=5),
    )


def test_a_claim_takes_the_oldest_due_first_up_to_its_limit(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = deliveries_to(db_session, callback, 5, now)
    claimed = claim_deliveries(db_session, now, settings, limit=3)
    assert [c.id for c in claimed] == [d.id for d in made[:3]]
    assert len({c.lease_id for c in claimed}) == 1
    # The rest is still there for the next claim; the first three are leased.
    assert [c.id for c in claim_deliveries(db_session, now, settings, limit=10)] == [
        d.id for d in made[3:]
    ]


def test_one_callback_gets_no_more_than_its_cap_of_a_claim(db_session, settings, tenant):
    now = datetime.now(UTC)
    capped = settings.replace(callback_concurrency=2)
    slow = make_callback(db_session, tenant.row, "http://127.0.0.1:1/slow")
    fast = make_callback(db_session, tenant.row, "http://127.0.0.1:1/fast")
    deliveries_to(db_session, slow, 6, now - timedelta(minutes=1))  # due first
    fast_ones = deliveries_to(db_session, fast, 2, now)
    claimed = claim_deliveries(db_session, now, capped, limit=10)
    by_lane = [c.lane for c in claimed]
    assert by_lane.count(str(slow.id)) == 2
    assert {c.id for c in claimed if c.callback_id == fast.id} == {d.id for d in fast_ones}


def test_a_lane_already_full_in_this_process_gets_nothing(db_session, settings, tenant):
    now = datetime.now(UTC)
    capped = settings.replace(callback_concurrency=3)
    slow = make_callback(db_session, tenant.row, "http://127.0.0.1:1/slow")
    fast = make_callback(db_session, tenant.row, "http://127.0.0.1:1/fast")
    deliveries_to(db_session, slow, 4, now - timedelta(minutes=1))
    deliveries_to(db_session, fast, 1, now)
    full = claim_deliveries(db_session, now, capped, limit=10, in_flight={str(slow.id): 3})
    assert [c.callback_id for c in full] == [fast.id]
    partly = claim_deliveries(db_session, now, capped, limit=10, in_flight={str(slow.id): 2})
    assert [c.callback_id for c in partly] == [slow.id]


def test_ad_hoc_urls_are_capped_by_url(db_session, settings, tenant):
    now = datetime.now(UTC)
    capped = settings.replace(callback_concurrency=1)
    for _ in range(3):
        events_publish(db_session, tenant.row, "http://127.0.0.1:1/adhoc", now)
    claimed = claim_deliveries(db_session, now, capped, limit=10)
    assert [c.lane for c in claimed] == [lane_of(None, "http://127.0.0.1:1/adhoc")]


def events_publish(db_session, owner, url, now):
    from app import events
    from app.services import outbox

    return outbox.publish(
        db_session,
        tenant_id=owner.id,
        event_type=events.JOB_SUCCEEDED,
        data={},
        now=now,
        extra_urls=[url],
    )


def test_a_claim_can_be_limited_to_given_deliveries(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = deliveries_to(db_session, callback, 3, now)
    claimed = claim_deliveries(db_session, now, settings, limit=10, only=[made[1].id])
    assert [c.id for c in claimed] == [made[1].id]


def test_a_disabled_callbacks_delivery_is_settled_as_failed_not_sent(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    (delivery,) = deliveries_to(db_session, callback, 1, now)
    callback.enabled = False
    db_session.flush()
    assert claim_deliveries(db_session, now, settings, limit=10) == []
    db_session.expire_all()
    stored = db_session.get(Delivery, delivery.id)
    assert stored.status == DeliveryStatus.FAILED
    assert stored.lease_id is None


def test_recording_a_batch_moves_each_delivery_on_and_logs_each_attempt(
    db_session, settings, tenant
):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = deliveries_to(db_session, callback, 2, now)
    first, second = claim_deliveries(db_session, now, settings, limit=10)
    ours = record_attempts(
        db_session, [(first, outcome(now)), (second, outcome(now, succeeded=False))], settings
    )
    assert ours == {first.id, second.id}
    db_session.expire_all()
    done, retrying = (db_session.get(Delivery, d.id) for d in made)
    assert (done.status, done.attempt_count, done.lease_id) == (DeliveryStatus.SUCCEEDED, 1, None)
    assert retrying.status == DeliveryStatus.PENDING
    assert retrying.next_attempt_at == now + timedelta(seconds=5)
    attempts = db_session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_([d.id for d in made]))
    ).all()
    assert sorted(a.succeeded for a in attempts) == [False, True]


def test_a_batch_is_leased_in_two_statements_and_recorded_in_one(
    db_session, engine, settings, tenant
):
    """Each statement is a round trip a drain waits for, on every round: the lease returns the
    messages it leased, and the recording logs the attempts with the settling."""
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    deliveries_to(db_session, callback, 3, now)
    db_session.flush()
    statements: list[str] = []

    def seen(*args) -> None:
        if not args[2].startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            statements.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        claimed = claim_deliveries(db_session, now, settings, limit=10)
        leasing, statements[:] = list(statements), []
        ours = record_attempts(db_session, [(c, outcome(now)) for c in claimed], settings)
        recording = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(claimed) == 3 and ours == {c.id for c in claimed}
    assert [s.split("(")[0] for s in leasing] == [
        "EXECUTE boomerang_claim_deliveries",
        "EXECUTE boomerang_leased_callbacks",
    ]
    assert [s.split("(")[0] for s in recording] == ["EXECUTE boomerang_settle_and_log_deliveries"]
    assert {c.body for c in claimed} == {
        m.body
        for m in db_session.scalars(select(Message).where(Message.tenant_id == tenant.row.id))
    }
    logged = db_session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ours))
    ).all()
    assert len(logged) == 3


def test_an_attempt_after_the_lease_passed_to_another_worker_is_logged_but_changes_nothing(
    db_session, settings, tenant
):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    (delivery,) = deliveries_to(db_session, callback, 1, now)
    (stale,) = claim_deliveries(db_session, now, settings, limit=1)
    later = now + timedelta(seconds=settings.delivery_lease_seconds + 1)
    (fresh,) = claim_deliveries(db_session, later, settings, limit=1)
    assert fresh.lease_id != stale.lease_id
    assert record_attempts(db_session, [(stale, outcome(now, succeeded=False))], settings) == set()
    db_session.expire_all()
    stored = db_session.get(Delivery, delivery.id)
    assert stored.lease_id == fresh.lease_id and stored.attempt_count == 0
    assert len(stored.attempts) == 1


@pytest.fixture
def committed(engine) -> Iterator[sessionmaker[Session]]:
    """Sessions that really commit, for what only separate connections can show; the tenants
    they make are deleted afterwards."""
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    yield factory
    with factory() as session:
        session.execute(delete(Tenant).where(Tenant.name.like("claims-%")))
        session.commit()


def test_concurrent_claimers_never_lease_the_same_delivery(committed, settings):
    now = datetime.now(UTC)
    with committed() as session:
        owner, _ = make_tenant(session, "claims-race")
        callback = make_callback(session, owner, "http://127.0.0.1:1/a")
        made = {d.id for d in deliveries_to(session, callback, 30, now)}
        session.commit()
    with committed() as one, committed() as two:
        # Both transactions stay open, so the second must skip what the first has locked.
        first = claim_deliveries(one, now, settings, limit=20)
        second = claim_deliveries(two, now, settings, limit=20)
        one.commit()
        two.commit()
    with committed() as three:
        third = claim_deliveries(three, now, settings, limit=30)
        three.commit()
    claims = [{c.id for c in batch} for batch in (first, second, third)]
    assert len(claims[0]) == 20
    assert sum(len(ids) for ids in claims) == len(made)  # nobody leased a delivery twice
    assert set().union(*claims) == made


def test_an_attempt_in_flight_when_its_callback_is_deleted_leaves_the_delivery_cancelled(
    db_session, settings, tenant
):
    from app.services.callbacks import delete_callback

    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    (delivery,) = deliveries_to(db_session, callback, 1, now)
    (claimed,) = claim_deliveries(db_session, now, settings, limit=1)
    delete_callback(db_session, tenant.row, callback.id)
    # The POST was made meanwhile and failed with retries left: it is logged, but the delivery
    # must not come back as pending, to be sent later to the removed URL as if it were ad hoc.
    failed = outcome(now, succeeded=False)
    assert record_attempts(db_session, [(claimed, failed)], settings) == set()
    db_session.expire_all()
    stored = db_session.get(Delivery, delivery.id)
    assert stored.status == DeliveryStatus.CANCELLED
    assert len(stored.attempts) == 1
    assert claim_deliveries(db_session, now + timedelta(hours=1), settings, limit=10) == []


def test_learned_lane_limits_bound_each_callback_and_new_ones_start_small(
    db_session, settings, tenant
):
    now = datetime.now(UTC)
    dead = make_callback(db_session, tenant.row, "http://127.0.0.1:1/dead")
    healthy = make_callback(db_session, tenant.row, "http://127.0.0.1:1/healthy")
    new = make_callback(db_session, tenant.row, "http://127.0.0.1:1/new")
    deliveries_to(db_session, dead, 10, now - timedelta(minutes=2))  # due first
    deliveries_to(db_session, healthy, 10, now - timedelta(minutes=1))
    deliveries_to(db_session, new, 10, now)
    limits = LaneLimits(ceiling=128, initial=4)
    timeout = HttpResult(None, None, None, False, 1000, "timed out", ErrorKind.TIMEOUT)
    for _ in range(2):
        limits.heard(str(dead.id), timeout)  # 4 -> 2 -> 1
    for _ in range(4):
        limits.heard(str(healthy.id), HttpResult(200, {}, "", False, 5))  # 4 -> 8

    claimed = claim_deliveries(db_session, now, settings, limit=100, lane_limits=limits)

    per_callback = Counter(c.callback_id for c in claimed)
    assert per_callback == {dead.id: 1, healthy.id: 8, new.id: 4}
