"""A callback that keeps failing is announced, then disabled; its recovery is announced too; a
disabled one can be recovered."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg2.errors
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import events
from app.models import Callback, Delivery, DeliveryStatus, Message, Tenant
from app.services.callback_health import note_attempt_outcomes
from app.services.callbacks import enable_callback
from tests.factories import make_callback, make_delivery
from tests.sending import deliver
from workers.delivery.http import OutboundClient


def note_attempt_outcome(session, callback_id, succeeded, now, settings):
    """One attempt's outcome, as a batch of one."""
    note_attempt_outcomes(session, callback_id, [succeeded], now, settings)


def reload_callback(db_session, callback_id) -> Callback:
    db_session.expire_all()
    return db_session.get(Callback, callback_id)


def test_failures_build_a_streak_that_a_success_clears(db_session, settings, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    start = datetime.now(UTC)
    note_attempt_outcome(db_session, callback.id, False, start, settings)
    note_attempt_outcome(db_session, callback.id, False, start + timedelta(minutes=1), settings)
    failing = reload_callback(db_session, callback.id)
    assert failing.consecutive_failures == 2
    assert failing.failing_since == start
    note_attempt_outcome(db_session, callback.id, True, start + timedelta(minutes=2), settings)
    healed = reload_callback(db_session, callback.id)
    assert healed.consecutive_failures == 0
    assert healed.failing_since is None
    assert healed.enabled is True


def test_a_callback_failing_past_the_limit_is_disabled_and_others_are_told(
    db_session, settings, tenant, sent_tasks
):
    owner = tenant.row
    failing = make_callback(db_session, owner, "http://127.0.0.1:1/failing")
    ops = make_callback(
        db_session, owner, "http://127.0.0.1:1/ops", event_types=["callback.disabled"]
    )
    make_callback(db_session, owner, "http://127.0.0.1:1/jobs-only")
    start = datetime.now(UTC)
    limit = timedelta(seconds=settings.callback_disable_after_seconds)

    note_attempt_outcome(db_session, failing.id, False, start, settings)
    note_attempt_outcome(
        db_session, failing.id, False, start + limit - timedelta(seconds=1), settings
    )
    assert reload_callback(db_session, failing.id).enabled is True

    note_attempt_outcome(db_session, failing.id, False, start + limit, settings)
    disabled = reload_callback(db_session, failing.id)
    assert disabled.enabled is False
    assert "3 failed attempts in a row" in disabled.disabled_reason

    (message,) = db_session.scalars(
        select(Message).where(Message.event_type == events.CALLBACK_DISABLED)
    ).all()
    assert json.loads(message.body)["data"]["callback_id"] == str(failing.id)
    targets = db_session.scalars(
        select(Delivery.callback_id).where(Delivery.message_id == message.id)
    )
    assert list(targets) == [ops.id]


def test_a_disabled_callback_is_not_disabled_again(db_session, settings, tenant):
    owner = tenant.row
    failing = make_callback(db_session, owner, "http://127.0.0.1:1/failing", enabled=False)
    make_callback(db_session, owner, "http://127.0.0.1:1/ops", event_types=["callback.disabled"])
    start = datetime.now(UTC) - timedelta(days=30)
    failing.failing_since = start
    db_session.flush()
    note_attempt_outcome(db_session, failing.id, False, datetime.now(UTC), settings)
    assert (
        db_session.scalars(
            select(Message).where(Message.event_type == events.CALLBACK_DISABLED)
        ).all()
        == []
    )


def test_enable_turns_a_disabled_callback_back_on(client, auth, db_session, tenant):
    callback = make_callback(
        db_session,
        tenant.row,
        "http://127.0.0.1:1/hook",
        enabled=False,
        consecutive_failures=9,
        failing_since=datetime.now(UTC),
        disabled_reason="failing",
    )
    response = client.post(f"/v1/callbacks/{callback.id}/enable", headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["enabled"] is True
    assert response.get_json()["disabled_reason"] is None
    assert reload_callback(db_session, callback.id).consecutive_failures == 0


def test_recover_resends_failed_deliveries_since_a_time(
    client, auth, db_session, tenant, sent_tasks
):
    owner = tenant.row
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    now = datetime.now(UTC)
    deliveries = []
    for age_hours in (1, 5, 30):
        delivery = make_delivery(db_session, callback, now)
        delivery.status = DeliveryStatus.FAILED
        delivery.created_at = now - timedelta(hours=age_hours)
        deliveries.append(delivery)
    deliveries[1].status = DeliveryStatus.SUCCEEDED
    db_session.commit()
    sent_tasks.clear()

    since = (now - timedelta(hours=10)).isoformat()
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover", query_string={"since": since}, headers=auth
    )

    assert response.status_code == 202, response.get_json()
    assert response.get_json() == {"recovered": 1}
    db_session.expire_all()
    assert db_session.get(Delivery, deliveries[0].id).status == DeliveryStatus.PENDING
    assert db_session.get(Delivery, deliveries[2].id).status == DeliveryStatus.FAILED
    assert [(t.name, t.args) for t in sent_tasks] == [("boomerang.deliver", ())]


def test_recover_needs_a_valid_since(client, auth, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover", query_string={"since": "yday"}, headers=auth
    )
    assert response.status_code == 422
    assert "since" in response.get_json()["errors"]["query"]


def test_recover_and_enable_hide_other_tenants_callbacks(client, other_auth, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    assert client.post(f"/v1/callbacks/{callback.id}/enable", headers=other_auth).status_code == 404
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover",
        query_string={"since": "2020-01-01T00:00:00Z"},
        headers=other_auth,
    )
    assert response.status_code == 404


# callback.failing and callback.recovered ---------------------------------------------------------

INCIDENT_EVENTS = ("callback.failing", "callback.recovered", "callback.disabled")


def incident_messages(session, callback_id, event_type) -> list[dict]:
    """The data of every ``event_type`` message about ``callback_id``."""
    bodies = session.scalars(select(Message.body).where(Message.event_type == event_type))
    found = [json.loads(body)["data"] for body in bodies]
    return [data for data in found if data["callback_id"] == str(callback_id)]


def make_listener(session, owner, event_types=INCIDENT_EVENTS):
    return make_callback(session, owner, "http://127.0.0.1:1/ops", event_types=list(event_types))


def test_an_incident_over_many_deliveries_is_announced_once_and_closed_once(
    db_session, settings, tenant
):
    owner = tenant.row
    failing = make_callback(db_session, owner, "http://127.0.0.1:1/failing")
    ops = make_listener(db_session, owner)
    make_callback(db_session, owner, "http://127.0.0.1:1/jobs-only")
    start = datetime.now(UTC)
    after = timedelta(seconds=settings.callback_failing_after_seconds)

    for offset in (timedelta(0), after / 4, after / 2, after - timedelta(seconds=1)):
        note_attempt_outcome(db_session, failing.id, False, start + offset, settings)
    assert incident_messages(db_session, failing.id, "callback.failing") == []

    for offset in (after, after * 2, after * 10):
        note_attempt_outcome(db_session, failing.id, False, start + offset, settings)
    (announced,) = incident_messages(db_session, failing.id, "callback.failing")
    assert announced == {
        "callback_id": str(failing.id),
        "url": failing.url,
        "failing_since": start.isoformat(),
        "failed_attempts": 5,
    }
    message = db_session.scalar(select(Message).where(Message.event_type == "callback.failing"))
    targets = db_session.scalars(
        select(Delivery.callback_id).where(Delivery.message_id == message.id)
    )
    assert list(targets) == [ops.id]

    healed_at = start + after * 11
    note_attempt_outcome(db_session, failing.id, True, healed_at, settings)
    note_attempt_outcome(db_session, failing.id, True, healed_at, settings)
    (closed,) = incident_messages(db_session, failing.id, "callback.recovered")
    assert closed == {
        "callback_id": str(failing.id),
        "url": failing.url,
        "failing_since": start.isoformat(),
        "failed_attempts": 7,
        "recovered_at": healed_at.isoformat(),
    }
    assert len(incident_messages(db_session, failing.id, "callback.failing")) == 1
    assert reload_callback(db_session, failing.id).failing_reported_at is None


def test_a_blip_shorter_than_the_threshold_raises_nothing(db_session, settings, tenant):
    owner = tenant.row
    flaky = make_callback(db_session, owner, "http://127.0.0.1:1/flaky")
    make_listener(db_session, owner)
    start = datetime.now(UTC)
    note_attempt_outcome(db_session, flaky.id, False, start, settings)
    note_attempt_outcome(db_session, flaky.id, False, start + timedelta(seconds=5), settings)
    note_attempt_outcome(db_session, flaky.id, True, start + timedelta(seconds=6), settings)
    for event_type in INCIDENT_EVENTS:
        assert incident_messages(db_session, flaky.id, event_type) == []


def test_with_no_threshold_the_first_failure_is_announced(db_session, settings, tenant):
    owner = tenant.row
    eager = settings.replace(callback_failing_after_seconds=0)
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    make_listener(db_session, owner)
    note_attempt_outcome(db_session, callback.id, False, datetime.now(UTC), eager)
    assert len(incident_messages(db_session, callback.id, "callback.failing")) == 1


def test_a_new_incident_after_a_recovery_is_announced_again(db_session, settings, tenant):
    owner = tenant.row
    eager = settings.replace(callback_failing_after_seconds=0)
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    make_listener(db_session, owner)
    now = datetime.now(UTC)
    for succeeded in (False, True, False, False, True):
        note_attempt_outcome(db_session, callback.id, succeeded, now, eager)
    assert len(incident_messages(db_session, callback.id, "callback.failing")) == 2
    assert len(incident_messages(db_session, callback.id, "callback.recovered")) == 2


def test_a_callback_is_never_told_about_its_own_incident(db_session, settings, tenant):
    owner = tenant.row
    eager = settings.replace(callback_failing_after_seconds=0)
    callback = make_listener(db_session, owner)
    note_attempt_outcome(db_session, callback.id, False, datetime.now(UTC), eager)
    assert (
        db_session.scalars(select(Delivery).where(Delivery.callback_id == callback.id)).all() == []
    )


def test_a_disabled_callback_that_keeps_failing_is_not_announced(db_session, settings, tenant):
    owner = tenant.row
    eager = settings.replace(callback_failing_after_seconds=0)
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook", enabled=False)
    make_listener(db_session, owner)
    note_attempt_outcome(db_session, callback.id, False, datetime.now(UTC), eager)
    assert incident_messages(db_session, callback.id, "callback.failing") == []


def test_failing_long_enough_to_be_disabled_is_announced_before_the_disabling(
    db_session, settings, tenant
):
    owner = tenant.row
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.callback_disable_after_seconds + 1)
    callback = make_callback(
        db_session,
        owner,
        "http://127.0.0.1:1/hook",
        consecutive_failures=1,
        failing_since=long_ago,
    )
    make_listener(db_session, owner)
    note_attempt_outcome(db_session, callback.id, False, datetime.now(UTC), settings)
    assert len(incident_messages(db_session, callback.id, "callback.failing")) == 1
    assert len(incident_messages(db_session, callback.id, "callback.disabled")) == 1
    assert reload_callback(db_session, callback.id).enabled is False


def test_re_enabling_a_callback_starts_a_new_incident(db_session, settings, tenant):
    owner = tenant.row
    eager = settings.replace(callback_failing_after_seconds=0)
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    make_listener(db_session, owner)
    note_attempt_outcome(db_session, callback.id, False, datetime.now(UTC), eager)
    enable_callback(db_session, owner, callback.id)
    assert reload_callback(db_session, callback.id).failing_reported_at is None
    note_attempt_outcome(db_session, callback.id, False, datetime.now(UTC), eager)
    assert len(incident_messages(db_session, callback.id, "callback.failing")) == 2
    assert incident_messages(db_session, callback.id, "callback.recovered") == []


# Batches -----------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
STARTING_POINTS = {
    "healthy": {},
    "failing briefly": {"consecutive_failures": 2, "failing_since": NOW - timedelta(seconds=20)},
    "failing, not yet announced": {
        "consecutive_failures": 2,
        "failing_since": NOW - timedelta(minutes=2),
    },
    "failing, announced": {
        "consecutive_failures": 5,
        "failing_since": NOW - timedelta(minutes=10),
        "failing_reported_at": NOW - timedelta(minutes=9),
    },
    "failing for days": {"consecutive_failures": 40, "failing_since": NOW - timedelta(days=6)},
}
BATCHES = [
    tuple(outcome == "1" for outcome in f"{n:0{length}b}")
    for length in range(1, 5)
    for n in range(2**length)
]


def health(session, callback_id):
    callback = reload_callback(session, callback_id)
    return (
        callback.consecutive_failures,
        callback.failing_since,
        callback.failing_reported_at,
        callback.enabled,
        callback.disabled_reason,
    )


def told(session, callback_id) -> Counter:
    """What the listeners were told about this callback, without what names it."""
    return Counter(
        (event_type, json.dumps({k: v for k, v in data.items() if k not in ("callback_id", "url")}))
        for event_type in INCIDENT_EVENTS
        for data in incident_messages(session, callback_id, event_type)
    )


@pytest.mark.parametrize("failing_after", [0, 60])
def test_a_batch_does_what_its_outcomes_do_one_by_one(db_session, settings, tenant, failing_after):
    owner = tenant.row
    settings = settings.replace(callback_failing_after_seconds=failing_after)
    make_listener(db_session, owner)
    pairs = []
    for start_name, start in STARTING_POINTS.items():
        for batch in BATCHES:
            one_by_one = make_callback(db_session, owner, "http://127.0.0.1:1/a", **start)
            batched = make_callback(db_session, owner, "http://127.0.0.1:1/b", **start)
            for succeeded in batch:
                note_attempt_outcome(db_session, one_by_one.id, succeeded, NOW, settings)
            note_attempt_outcomes(db_session, batched.id, batch, NOW, settings)
            pairs.append((start_name, batch, one_by_one.id, batched.id))

    for start_name, batch, one_by_one_id, batched_id in pairs:
        where = f"from {start_name!r} with {batch}"
        assert health(db_session, batched_id) == health(db_session, one_by_one_id), where
        assert told(db_session, batched_id) == told(db_session, one_by_one_id), where
    assert any(told(db_session, pair[2]) for pair in pairs)


class StatementCounter:
    def __init__(self, session):
        self.connection = session.connection()
        self.statements: list[str] = []

    def __enter__(self):
        event.listen(self.connection, "before_cursor_execute", self._count)
        return self.statements

    def __exit__(self, *_exc):
        event.remove(self.connection, "before_cursor_execute", self._count)

    def _count(self, _conn, _cursor, statement, *_args):
        self.statements.append(statement)


def test_a_batch_costs_two_statements_however_long_it_is(db_session, settings, tenant):
    callback = make_callback(
        db_session,
        tenant.row,
        "http://127.0.0.1:1/hook",
        consecutive_failures=3,
        failing_since=NOW - timedelta(minutes=10),
        failing_reported_at=NOW - timedelta(minutes=9),
    )
    with StatementCounter(db_session) as statements:
        note_attempt_outcomes(db_session, callback.id, [False] * 50, NOW, settings)
    assert len(statements) == 2
    assert reload_callback(db_session, callback.id).consecutive_failures == 53


def test_a_healthy_callbacks_successes_cost_one_statement(db_session, settings, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    with StatementCounter(db_session) as statements:
        note_attempt_outcomes(db_session, callback.id, [True] * 50, NOW, settings)
    assert len(statements) == 1
    assert reload_callback(db_session, callback.id).consecutive_failures == 0


@pytest.mark.parametrize(("streak", "outcomes", "locks"), [(0, [True], False), (2, [True], True)])
def test_only_an_unhealthy_callbacks_row_is_locked(
    engine, settings, committed_tenant, streak, outcomes, locks
):
    with Session(engine) as session:
        owner = session.get(Tenant, committed_tenant)
        callback = make_callback(
            session,
            owner,
            "http://127.0.0.1:1/hook",
            consecutive_failures=streak,
            failing_since=NOW if streak else None,
        )
        session.commit()
        callback_id = callback.id
    with Session(engine) as worker, engine.connect() as other:
        note_attempt_outcomes(worker, callback_id, outcomes, NOW, settings)
        try:
            other.execute(
                text("SELECT id FROM callback WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": callback_id},
            )
            locked = False
        except OperationalError as exc:
            assert isinstance(exc.orig, psycopg2.errors.LockNotAvailable)
            locked = True
        other.rollback()
        worker.rollback()
    assert locked is locks


def test_an_empty_batch_or_a_deleted_callback_is_a_no_op(db_session, settings):
    note_attempt_outcomes(db_session, uuid.uuid4(), [False, True], NOW, settings)
    with StatementCounter(db_session) as statements:
        note_attempt_outcomes(db_session, uuid.uuid4(), [], NOW, settings)
    assert statements == []


# Concurrent workers ------------------------------------------------------------------------------


@pytest.fixture
def racing_callbacks(engine, committed_tenant):
    """The id of a callback failing for an hour, not yet announced, with a committed listener."""
    with Session(engine) as session:
        owner = session.get(Tenant, committed_tenant)
        failing = make_callback(
            session,
            owner,
            "http://127.0.0.1:1/failing",
            consecutive_failures=3,
            failing_since=datetime.now(UTC) - timedelta(hours=1),
        )
        make_listener(session, owner)
        session.commit()
        return failing.id


def count_told(engine, callback_id, event_type) -> int:
    with Session(engine) as session:
        return len(incident_messages(session, callback_id, event_type))


def wait_until_blocked_or_done(engine, pid: int, worker: threading.Thread) -> None:
    """Return once ``worker`` has finished or its connection waits for a lock."""
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while worker.is_alive():
            waiting = conn.execute(
                text("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = :pid AND NOT granted)"),
                {"pid": pid},
            ).scalar()
            conn.commit()
            if waiting:
                return
            assert time.monotonic() < deadline, "the second worker neither finished nor waited"
            time.sleep(0.01)


def race(engine, settings, callback_id, first_batch, second_batch) -> None:
    """The first worker applies its batch and holds its transaction open until the second has
    either finished (no lock taken: the bug) or queued behind it; then both commit."""
    errors: list[BaseException] = []
    with engine.connect() as first_conn, engine.connect() as second_conn:
        first, second = Session(bind=first_conn), Session(bind=second_conn)
        second_pid = second.scalar(text("SELECT pg_backend_pid()"))
        second.commit()
        now = datetime.now(UTC)
        note_attempt_outcomes(first, callback_id, first_batch, now, settings)

        def second_worker() -> None:
            try:
                note_attempt_outcomes(second, callback_id, second_batch, now, settings)
                second.commit()
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=second_worker)
        worker.start()
        wait_until_blocked_or_done(engine, second_pid, worker)
        first.commit()
        worker.join()
        first.close()
        second.close()
    assert errors == []


def test_two_workers_racing_into_an_incident_announce_it_once(engine, settings, racing_callbacks):
    race(engine, settings, racing_callbacks, [False], [False, False])

    assert count_told(engine, racing_callbacks, "callback.failing") == 1
    with Session(engine) as session:
        assert session.get(Callback, racing_callbacks).consecutive_failures == 6


def test_two_workers_racing_out_of_an_incident_close_it_once(engine, settings, racing_callbacks):
    race(engine, settings, racing_callbacks, [False], [False])
    race(engine, settings, racing_callbacks, [True], [True, True])

    assert count_told(engine, racing_callbacks, "callback.failing") == 1
    assert count_told(engine, racing_callbacks, "callback.recovered") == 1


def test_many_workers_at_once_announce_an_incident_once_and_close_it_once(
    engine, settings, racing_callbacks
):
    def all_at_once(outcomes: list[bool], workers: int = 8) -> None:
        start = threading.Barrier(workers)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with Session(engine) as session:
                    start.wait()
                    note_attempt_outcomes(
                        session, racing_callbacks, outcomes, datetime.now(UTC), settings
                    )
                    session.commit()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    all_at_once([False, False])
    all_at_once([True])

    assert count_told(engine, racing_callbacks, "callback.failing") == 1
    assert count_told(engine, racing_callbacks, "callback.recovered") == 1


def test_real_deliveries_to_a_receiver_that_goes_down_and_back_raise_one_of_each(
    db_session, settings, tenant, receiver
):
    owner = tenant.row
    eager = settings.replace(callback_failing_after_seconds=0)
    receiver.answer("/down", 500, 500, 500, 200)
    callback = make_callback(db_session, owner, receiver.url("/down"))
    make_listener(db_session, owner)
    deliveries = [make_delivery(db_session, callback) for _ in range(3)]
    db_session.commit()

    client = OutboundClient(eager)
    try:
        for delivery in deliveries:
            assert deliver(db_session, client, eager, delivery.id) is False
        for delivery in deliveries:
            db_session.get(Delivery, delivery.id).next_attempt_at = datetime.now(UTC)
        db_session.commit()
        for delivery in deliveries:
            assert deliver(db_session, client, eager, delivery.id) is True
    finally:
        client.close()

    db_session.expire_all()
    assert len(incident_messages(db_session, callback.id, "callback.failing")) == 1
    (recovered,) = incident_messages(db_session, callback.id, "callback.recovered")
    assert recovered["failed_attempts"] == 3
