"""The portal's delivery search: the API's filters in a form, and a bulk replay of what they
match behind a confirmation."""

from __future__ import annotations

import re

from sqlalchemy import select, update

from app.events import webhook_id
from app.models import Delivery, DeliveryReplay, DeliveryStatus
from app.services.replays import replay_step
from tests.factories import make_callback, make_delivery

DELIVERY_LINK = re.compile(r'href="/portal/deliveries/([0-9a-f-]{36})"')


def ended(db_session, delivery, status):
    db_session.execute(update(Delivery).where(Delivery.id == delivery.id).values(status=status))
    return delivery


def test_it_finds_a_delivery_by_its_webhook_id(signed_in, db_session, owner):
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/hook", event_types=["*"])
    wanted = make_delivery(db_session, callback, event_type="invoice.paid")
    make_delivery(db_session, callback, event_type="invoice.paid")

    page = signed_in.text(f"/portal/deliveries?webhook_id={webhook_id(wanted.message_id)}")

    assert DELIVERY_LINK.findall(page) == [str(wanted.id)]


def test_it_narrows_by_type_and_status_and_counts_what_a_replay_would_send(
    signed_in, db_session, owner
):
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/hook", event_types=["*"])
    failed = ended(
        db_session,
        make_delivery(db_session, callback, event_type="invoice.paid"),
        DeliveryStatus.FAILED,
    )
    ended(
        db_session,
        make_delivery(db_session, callback, event_type="user.created"),
        DeliveryStatus.FAILED,
    )
    make_delivery(db_session, callback, event_type="invoice.voided")  # pending
    db_session.flush()

    page = signed_in.text("/portal/deliveries?event_type=invoice.*&status=failed")

    assert DELIVERY_LINK.findall(page) == [str(failed.id)]
    assert "1 finished (succeeded or failed) deliveries match." in page
    assert "data-confirm=" in page


def test_without_a_filter_it_offers_no_replay(signed_in):
    assert "Replay" not in signed_in.text("/portal/deliveries")


def test_replay_sends_again_what_the_filters_match_once_however_often_it_is_posted(
    signed_in, db_session, owner, settings
):
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/hook", event_types=["*"])
    failed = ended(
        db_session,
        make_delivery(db_session, callback, event_type="invoice.paid"),
        DeliveryStatus.FAILED,
    )
    other = ended(
        db_session,
        make_delivery(db_session, callback, event_type="user.created"),
        DeliveryStatus.FAILED,
    )
    db_session.commit()
    search = "/portal/deliveries?event_type=invoice.*"
    form = {"event_type": "invoice.*", "replay_key": "form-1"}

    first = signed_in.post("/portal/deliveries/replay", form, page=search)
    again = signed_in.post("/portal/deliveries/replay", form, page=search)

    assert first.status_code == 303 and again.status_code == 303
    assert "event_type=invoice" in first.headers["Location"]
    assert "Replaying 1 deliveries" in signed_in.text(first.headers["Location"])
    assert len(db_session.scalars(select(DeliveryReplay.id)).all()) == 1
    while replay_step(db_session, db_session.scalar(select(DeliveryReplay.created_at)), settings):
        pass
    statuses = dict(db_session.execute(select(Delivery.id, Delivery.status)).all())
    assert statuses[failed.id] == DeliveryStatus.PENDING
    assert statuses[other.id] == DeliveryStatus.FAILED


def test_a_replay_with_a_bad_filter_starts_nothing(signed_in, db_session):
    response = signed_in.post(
        "/portal/deliveries/replay", {"status": "pending"}, page="/portal/deliveries"
    )

    assert response.status_code == 422
    assert 'id="status_error"' in response.get_data(as_text=True)
    assert db_session.scalar(select(DeliveryReplay.id)) is None
