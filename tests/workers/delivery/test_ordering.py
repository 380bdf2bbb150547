"""Ordered delivery per key, as the store keeps it: one event of a key at a time per callback,
in commit order, the next woken when the earlier ends, and the body saying what was given up."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from app.events import webhook_id
from app.models import Callback, Delivery, DeliveryStatus, Tenant
from app.services import outbox
from app.services.ordering import lock_key, lock_keys, wake_stranded
from tests.factories import make_callback, make_job, make_tenant
from workers.delivery.store import AttemptRecord, claim_deliveries, record_attempts


def send(
    session: Session, callbacks: list[Callback], key: str | None, number: int, now: datetime
) -> list[Delivery]:
    made = outbox.publish(
        session,
        tenant_id=callbacks[0].tenant_id,
        event_type="invoice.paid",
        data={"n": number},
        now=now,
        callbacks=callbacks,
        ordering_key=key,
    )
    return [session.get_one(Delivery, new.id) for new in made]


def answered(now: datetime, succeeded: bool, retry_in: float | None = 5) -> AttemptRecord:
    return AttemptRecord(
        attempted_at=now,
        request_headers={},
        response_status=200 if succeeded else 503,
        response_headers={},
        response_body="",
        response_body_truncated=False,
        duration_ms=2,
        succeeded=succeeded,
        error=None if succeeded else "receiver answered 503",
        next_attempt_at=None
        if succeeded or retry_in is None
        else now + timedelta(seconds=retry_in),
        outcome="2xx" if succeeded else "5xx",
        cause=None if succeeded else "5xx",
    )


def claim(session: Session, settings, now: datetime, limit: int = 50):
    return claim_deliveries(session, now, settings, limit=limit)


def numbers(claimed) -> list[int]:
    return sorted(json.loads(c.body)["data"]["n"] for c in claimed)


def test_a_key_goes_one_event_at_a_time_in_order(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = [send(db_session, [callback], "order-1", n, now)[0] for n in range(3)]
    # Only the first is due; the others wait parked behind it.
    assert [d.next_attempt_at is not None for d in made] == [True, False, False]

    first = claim(db_session, settings, now)
    assert numbers(first) == [0]
    assert json.loads(first[0].body)["ordering_key"] == "order-1"
    assert claim(db_session, settings, now) == []  # nothing else of the key while it is out

    record_attempts(db_session, [(first[0], answered(now, True))], settings)
    second = claim(db_session, settings, now)
    assert numbers(second) == [1]
    assert "preceding_failed" not in json.loads(second[0].body)


def test_ending_a_keyed_event_takes_its_key_as_it_settles_and_wakes_the_next_in_one_more(
    db_session, engine, settings, tenant
):
    """Every job's event is keyed, so this is every recorded round: the key is tried by the
    statement that settles, and only the wake is a statement of its own."""
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = [send(db_session, [callback], "order-1", n, now)[0] for n in range(2)]
    (first,) = claim(db_session, settings, now)
    statements: list[str] = []

    def seen(*args) -> None:
        if not args[2].startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            statements.append(args[2].split("(")[0])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        record_attempts(db_session, [(first, answered(now, True))], settings)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements[:2] == [
        "EXECUTE boomerang_settle_and_log_deliveries",
        "EXECUTE boomerang_wake_next_deliveries",
    ]
    assert not any("pg_try_advisory_xact_lock" in statement for statement in statements)
    db_session.refresh(made[1])
    assert made[1].next_attempt_at is not None  # woken in the same transaction
    assert numbers(claim(db_session, settings, now)) == [1]


def test_different_keys_and_unkeyed_events_go_in_parallel(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    for n in range(2):
        for key in ("a", "b", "c", None):
            send(db_session, [callback], key, n if key else 10 + n, now)
    claimed = claim(db_session, settings, now)
    assert numbers(claimed) == [0, 0, 0, 10, 11]


def test_a_retrying_event_holds_back_its_key_at_its_callback_only(db_session, settings, tenant):
    now = datetime.now(UTC)
    stuck = make_callback(db_session, tenant.row, "http://127.0.0.1:1/stuck")
    healthy = make_callback(db_session, tenant.row, "http://127.0.0.1:1/healthy")
    for n in range(2):
        send(db_session, [stuck, healthy], "k", n, now)
    first = claim(db_session, settings, now)
    assert sorted((c.callback_id, numbers([c])[0]) for c in first) == sorted(
        [(stuck.id, 0), (healthy.id, 0)]
    )
    record_attempts(
        db_session,
        [(c, answered(now, c.callback_id == healthy.id, retry_in=0)) for c in first],
        settings,
    )
    # The stuck callback's first event is due again (retry_in=0), and still ahead of its second.
    later = claim(db_session, settings, now + timedelta(seconds=1))
    assert sorted((c.callback_id, numbers([c])[0]) for c in later) == sorted(
        [(stuck.id, 0), (healthy.id, 1)]
    )


def test_after_a_given_up_event_the_next_goes_and_its_body_says_so(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = [send(db_session, [callback], "k", n, now)[0] for n in range(4)]
    for _ in range(2):  # the first two are given up on
        (head,) = claim(db_session, settings, now)
        record_attempts(db_session, [(head, answered(now, False, retry_in=None))], settings)
    (third,) = claim(db_session, settings, now)
    given_up = [webhook_id(d.message_id) for d in made[:2]]
    assert json.loads(third.body)["preceding_failed"] == given_up
    assert third.body.startswith(db_session.get_one(Delivery, made[2].id).message.body[:-1])

    # A retry of it sends the same bytes; once it succeeds, the next owes nothing.
    record_attempts(db_session, [(third, answered(now, False, retry_in=0))], settings)
    (again,) = claim(db_session, settings, now + timedelta(seconds=1))
    assert again.body == third.body
    record_attempts(db_session, [(again, answered(now, True))], settings)
    (fourth,) = claim(db_session, settings, now + timedelta(seconds=1))
    assert "preceding_failed" not in json.loads(fourth.body)


def test_a_cloudevent_names_the_given_up_ones_in_an_extension(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(
        db_session, tenant.row, "http://127.0.0.1:1/ce", format="cloudevents", format_version=1
    )
    made = [send(db_session, [callback], "k", n, now)[0] for n in range(2)]
    (head,) = claim(db_session, settings, now)
    record_attempts(db_session, [(head, answered(now, False, retry_in=None))], settings)
    (second,) = claim(db_session, settings, now)
    assert json.loads(second.body)["precedingfailed"] == webhook_id(made[0].message_id)


def test_a_jobs_events_are_keyed_by_the_job(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    job = make_job(db_session, tenant.row)
    progress, end = (
        outbox.publish(
            db_session,
            tenant_id=tenant.row.id,
            event_type=event_type,
            data={},
            now=now,
            job_id=job.id,
            callbacks=[callback],
        )[0]
        for event_type in ("job.progress", "job.succeeded")
    )
    rows = {
        d.id: d
        for d in db_session.scalars(select(Delivery).where(Delivery.id.in_([progress.id, end.id])))
    }
    assert rows[end.id].ordering_key == str(job.id)
    assert rows[end.id].next_attempt_at is None
    (claimed,) = claim(db_session, settings, now)
    assert claimed.event_type == "job.progress"
    # A job's implicit key is not written into its events' bodies.
    assert "ordering_key" not in json.loads(claimed.body)


def test_the_claim_never_passes_an_earlier_pending_event(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = [send(db_session, [callback], "k", n, now)[0] for n in range(2)]
    # However the later one became due (a manual "retry now", a stray wake), it waits.
    db_session.execute(
        update(Delivery)
        .where(Delivery.id == made[1].id)
        .values(next_attempt_at=now - timedelta(minutes=1))
    )
    db_session.execute(
        update(Delivery)
        .where(Delivery.id == made[0].id)
        .values(next_attempt_at=now + timedelta(hours=1))
    )
    assert claim(db_session, settings, now) == []


def test_the_sweep_wakes_a_parked_event_left_behind_nothing(db_session, settings, tenant):
    now = datetime.now(UTC)
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/a")
    made = [send(db_session, [callback], "k", n, now)[0] for n in range(3)]
    # Ended outside the pipeline, so nobody woke what waited behind it.
    db_session.execute(
        update(Delivery)
        .where(Delivery.id == made[0].id)
        .values(status=DeliveryStatus.FAILED, next_attempt_at=None)
    )
    assert claim(db_session, settings, now) == []
    assert wake_stranded(db_session, now) == 1  # the second; the third still waits behind it
    assert numbers(claim(db_session, settings, now)) == [1]


def test_an_event_published_while_its_predecessor_ends_is_never_stranded(
    engine, settings, committed_tenant
):
    """The ending side holds the key's lock until it commits, so the publisher, waiting for it,
    sees the predecessor ended and does not park behind it."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        callback = make_callback(
            session, session.get_one(Tenant, committed_tenant), "http://127.0.0.1:1/a"
        )
        (first,) = send(session, [callback], "race", 0, now)
        session.commit()
        callback_id, first_id = callback.id, first.id

    ending = Session(engine)
    (head,) = claim_deliveries(ending, now, settings, limit=10, only=[first_id])
    record_attempts(ending, [(head, answered(now, True))], settings)  # holds the key's lock now

    published: list[uuid.UUID] = []

    def publish_next() -> None:
        with Session(engine) as session:
            callback = session.get_one(Callback, callback_id)
            published.append(send(session, [callback], "race", 1, now)[0].id)
            session.commit()

    publisher = threading.Thread(target=publish_next)
    publisher.start()
    publisher.join(0.5)
    assert publisher.is_alive()  # waiting for the key
    ending.commit()
    ending.close()
    publisher.join(10)
    with Session(engine) as session:
        second = session.get_one(Delivery, published[0])
        assert second.next_attempt_at is not None  # due at once: nothing pending ahead of it


def test_an_event_parked_while_its_predecessor_ends_is_woken(engine, settings, committed_tenant):
    """The other way round: the publisher parks first and holds the key; the ending side waits
    for it, then sees the parked one and wakes it."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        callback = make_callback(
            session, session.get_one(Tenant, committed_tenant), "http://127.0.0.1:1/a"
        )
        (first,) = send(session, [callback], "race", 0, now)
        session.commit()
        first_id, callback_id = first.id, callback.id
    with Session(engine) as session:
        (head,) = claim_deliveries(session, now, settings, limit=10, only=[first_id])
        session.commit()

    publishing = Session(engine)
    (second,) = send(publishing, [publishing.get_one(Callback, callback_id)], "race", 1, now)
    assert second.next_attempt_at is None  # parked: the first is still out
    second_id = second.id

    def end_first() -> None:
        with Session(engine) as session:
            record_attempts(session, [(head, answered(now, True))], settings)
            session.commit()

    ender = threading.Thread(target=end_first)
    ender.start()
    ender.join(0.5)
    assert ender.is_alive()  # waiting for the key
    publishing.commit()
    publishing.close()
    ender.join(10)
    with Session(engine) as session:
        assert session.get_one(Delivery, second_id).next_attempt_at is not None


def test_one_tenants_key_never_holds_back_anothers(db_session, settings, tenant):
    """Even to the same URL (a job's ad-hoc callback URL is a lane of its own) with the same
    key, two tenants' events are two sequences."""
    now = datetime.now(UTC)
    other = make_tenant(db_session, "other").row
    url = "http://127.0.0.1:1/shared"
    for owner in (tenant.row, other):
        for n in range(2):
            outbox.publish(
                db_session,
                tenant_id=owner.id,
                event_type="invoice.paid",
                data={"n": n},
                now=now,
                extra_urls=[url],
                ordering_key="k",
            )
    claimed = claim(db_session, settings, now)
    assert sorted((c.tenant_id, numbers([c])[0]) for c in claimed) == sorted(
        [(tenant.row.id, 0), (other.id, 0)]
    )


def test_ending_never_waits_for_a_key_while_holding_another(engine, settings, committed_tenant):
    """A publisher holds key A and then asks for key B; deliveries of both keys end meanwhile.
    Were the ending side to hold B while waiting for A, the two would wait on each other until
    Postgres aborted one. It only tries the locks, wakes behind B at once, and behind A once the
    publisher has committed."""
    now = datetime.now(UTC)
    # B's lock sorts first: the order in which waiting for both would deadlock.
    key_b, key_a = sorted(["key-1", "key-2"], key=lambda key: lock_key(committed_tenant, key))
    with Session(engine) as session:
        callback = make_callback(
            session, session.get_one(Tenant, committed_tenant), "http://127.0.0.1:1/a"
        )
        heads = {key: send(session, [callback], key, 0, now)[0].id for key in (key_a, key_b)}
        behind_b = send(session, [callback], key_b, 1, now)[0].id  # parked behind B's head
        session.commit()
        callback_id = callback.id
    with Session(engine) as session:
        claimed = claim_deliveries(session, now, settings, limit=10, only=list(heads.values()))
        session.commit()
    assert len(claimed) == 2

    publishing = Session(engine)
    (behind_a,) = send(publishing, [publishing.get_one(Callback, callback_id)], key_a, 1, now)
    assert behind_a.next_attempt_at is None  # parked behind A's head; A is held until commit
    behind_a_id = behind_a.id

    failures: list[BaseException] = []

    def end_both() -> None:
        try:
            with Session(engine) as session:
                record_attempts(session, [(c, answered(now, True)) for c in claimed], settings)
                session.commit()  # then waits, holding nothing, for A to wake behind it
        except BaseException as exc:
            failures.append(exc)

    ender = threading.Thread(target=end_both)
    ender.start()
    ender.join(0.5)
    with Session(engine) as session:  # B was free: woken in the ending transaction itself
        assert session.get_one(Delivery, behind_b).next_attempt_at is not None
    # The publisher now takes B too (the ending side let it go at its commit), then commits.
    send(publishing, [publishing.get_one(Callback, callback_id)], key_b, 2, now)
    publishing.commit()
    publishing.close()
    ender.join(10)
    assert not ender.is_alive() and failures == []
    with Session(engine) as session:
        assert session.get_one(Delivery, behind_a_id).next_attempt_at is not None


def test_a_key_taken_up_front_is_not_asked_for_again_and_a_new_transaction_asks(engine):
    tenant_id = uuid.uuid4()
    statements: list[str] = []

    def seen(*args) -> None:
        statements.append(args[2])

    def locks() -> int:
        # (Prepared once per connection, the locking statement runs as an EXECUTE of it.)
        return sum("boomerang_lock_ordering_keys" in statement for statement in statements)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with Session(engine) as session:
            lock_keys(session, [(tenant_id, "a"), (tenant_id, "b")])
            lock_keys(session, [(tenant_id, "a")])  # held already: no statement
            assert locks() == 1
            session.rollback()
            lock_keys(session, [(tenant_id, "a")])
            assert locks() == 2
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_recording_takes_the_callback_before_its_deliveries_as_deleting_it_does(
    engine, settings, committed_tenant
):
    """Deleting a callback locks it, then cancels its pending deliveries; a worker recording
    attempts to it locks it before any of their rows too. So while a delete holds the callback,
    the recording waits without holding a delivery, and neither can end up waiting on the other."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        callback = make_callback(
            session, session.get_one(Tenant, committed_tenant), "http://127.0.0.1:1/locks"
        )
        made = [send(session, [callback], None, n, now)[0].id for n in range(3)]
        session.commit()
        callback_id = callback.id
    with Session(engine) as session:
        claimed = claim_deliveries(session, now, settings, limit=10, only=made)
        session.commit()
    assert len(claimed) == 3

    deleting = Session(engine)
    deleting.execute(select(Callback).where(Callback.id == callback_id).with_for_update())
    recorded: list[object] = []

    def record() -> None:
        with Session(engine) as session:
            recorded.append(
                record_attempts(session, [(c, answered(now, True)) for c in claimed], settings)
            )
            session.commit()

    recorder = threading.Thread(target=record)
    recorder.start()
    recorder.join(0.5)
    assert recorder.is_alive()  # waiting for the callback
    with Session(engine) as session:  # ... and holding none of the deliveries meanwhile
        free = session.scalars(
            select(Delivery.id).where(Delivery.id.in_(made)).with_for_update(nowait=True)
        ).all()
        assert sorted(free) == sorted(made)
    deleting.execute(
        update(Delivery)
        .where(Delivery.callback_id == callback_id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.CANCELLED)
    )
    deleting.commit()
    deleting.close()
    recorder.join(10)
    assert not recorder.is_alive()
    assert recorded == [set()]  # cancelled meanwhile: none of them was moved on
