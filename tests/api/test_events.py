"""/v1/events: publish your own events to the callbacks subscribed to them."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from app import create_app
from app.models import Delivery, DeliveryStatus, Message, Tenant
from app.services.published import publish_event
from tests.conftest import error_fields
from tests.factories import make_callback
from tests.sending import deliver

URL = "http://127.0.0.1:9/hook"


@pytest.fixture(autouse=True)
def uncatalogued_types_allowed(db_session, owner, other_auth):
    """Publishing here is about routing and repeats; the catalogue has tests of its own."""
    db_session.execute(update(Tenant).values(allow_uncatalogued_event_types=True))
    db_session.flush()


def publish(client, auth, **event):
    return client.post("/v1/events", json=event, headers=auth)


def deliveries_of(db_session, message_id: str) -> dict[str, Delivery]:
    rows = db_session.scalars(select(Delivery).where(Delivery.message_id == uuid.UUID(message_id)))
    return {delivery.url: delivery for delivery in rows}


def test_an_event_goes_to_every_callback_subscribed_to_its_type_or_a_wildcard_over_it(
    client, auth, db_session, owner, other_auth
):
    make_callback(db_session, owner, "http://127.0.0.1:9/exact", event_types=["invoice.paid"])
    make_callback(db_session, owner, "http://127.0.0.1:9/wild", event_types=["invoice.*"])
    make_callback(db_session, owner, "http://127.0.0.1:9/deep", event_types=["invoice.paid.*"])
    make_callback(db_session, owner, "http://127.0.0.1:9/other", event_types=["invoices.*"])
    make_callback(db_session, owner, "http://127.0.0.1:9/jobs")  # job.succeeded, job.failed
    make_callback(
        db_session, owner, "http://127.0.0.1:9/off", event_types=["invoice.*"], enabled=False
    )
    # Another tenant's callback hears nothing of this tenant's events.
    other = db_session.scalar(select(Tenant).where(Tenant.name == "globex"))
    make_callback(db_session, other, "http://127.0.0.1:9/theirs", event_types=["invoice.*"])

    response = publish(client, auth, type="invoice.paid", data={"amount": 120, "currency": "EUR"})

    assert response.status_code == 202, response.text
    body = response.json
    assert body["type"] == "invoice.paid"
    assert body["created"] is True
    assert body["deliveries"] == 2
    assert body["webhook_id"] == f"msg_{uuid.UUID(body['id']).hex}"
    assert set(deliveries_of(db_session, body["id"])) == {
        "http://127.0.0.1:9/exact",
        "http://127.0.0.1:9/wild",
    }
    message = db_session.get(Message, uuid.UUID(body["id"]))
    envelope = json.loads(message.body)
    assert envelope["type"] == "invoice.paid"
    assert envelope["data"] == {"amount": 120, "currency": "EUR"}
    assert message.job_id is None


def test_a_callback_on_channels_hears_only_events_on_one_of_them(client, auth, db_session, owner):
    make_callback(db_session, owner, "http://127.0.0.1:9/all", event_types=["user.*"])
    make_callback(
        db_session, owner, "http://127.0.0.1:9/eu", event_types=["user.*"], channels=["eu"]
    )
    make_callback(
        db_session,
        owner,
        "http://127.0.0.1:9/eu-or-us",
        event_types=["user.*"],
        channels=["eu", "us"],
    )

    def heard(**event) -> set[str]:
        response = publish(client, auth, type="user.created", data={}, **event)
        assert response.status_code == 202, response.text
        return set(deliveries_of(db_session, response.json["id"]))

    assert heard() == {"http://127.0.0.1:9/all"}
    assert heard(channels=["eu"]) == {
        "http://127.0.0.1:9/all",
        "http://127.0.0.1:9/eu",
        "http://127.0.0.1:9/eu-or-us",
    }
    assert heard(channels=["us", "apac"]) == {
        "http://127.0.0.1:9/all",
        "http://127.0.0.1:9/eu-or-us",
    }
    assert heard(channels=["apac"]) == {"http://127.0.0.1:9/all"}


def test_callbacks_take_channels_through_the_api(client, auth):
    created = client.post(
        "/v1/callbacks",
        json={"url": URL, "event_types": ["user.*"], "channels": ["eu", "eu", "tenant:42"]},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    assert created.json["channels"] == ["eu", "tenant:42"]
    callback_id = created.json["id"]
    cleared = client.patch(f"/v1/callbacks/{callback_id}", json={"channels": []}, headers=auth)
    assert cleared.json["channels"] == []
    for bad in (["has space"], [f"c{n}" for n in range(11)], ["x" * 129]):
        refused = client.post(
            "/v1/callbacks", json={"url": URL + "2", "channels": bad}, headers=auth
        )
        assert refused.status_code == 422
        assert "channels" in error_fields(refused)


def test_a_filtered_callback_hears_only_events_its_filter_passes(client, auth, db_session, owner):
    make_callback(db_session, owner, "http://127.0.0.1:9/all", event_types=["order.*"])
    make_callback(
        db_session,
        owner,
        "http://127.0.0.1:9/big-eur",
        event_types=["order.*"],
        filter='data.amount > 100 && data.currency == "EUR"',
    )
    make_callback(
        db_session,
        owner,
        "http://127.0.0.1:9/broken",
        event_types=["order.*"],
        filter="data.customer.tier == 1",  # fails on events without a customer
    )

    def deliveries(data) -> dict[str, Delivery]:
        response = publish(client, auth, type="order.placed", data=data)
        assert response.status_code == 202, response.text
        return {
            url.rsplit("/", 1)[1]: delivery
            for url, delivery in deliveries_of(db_session, response.json["id"]).items()
        }

    def heard(data) -> set[str]:
        made = deliveries(data)
        return {name for name, d in made.items() if d.status == DeliveryStatus.PENDING}

    assert heard({"amount": 120, "currency": "EUR"}) == {"all", "big-eur"}
    assert heard({"amount": 120, "currency": "USD"}) == {"all"}
    assert heard({"amount": 5, "customer": {"tier": 1}}) == {"all", "broken"}
    # A filter that cannot decide skips its own callback only; the others still hear it, and
    # why is kept on that callback's delivery, written cancelled and never sent.
    made = deliveries({"amount": 5})
    assert {name: d.status for name, d in made.items()} == {
        "all": DeliveryStatus.PENDING,
        "broken": DeliveryStatus.CANCELLED,
    }
    broken = made["broken"]
    assert broken.next_attempt_at is None and broken.attempt_count == 0
    (why,) = broken.attempts
    assert why.response_status is None and not why.succeeded
    assert why.error.startswith("not sent: the callback's filter could not decide")
    assert "customer" in why.error
    # Withdrawn, it stays so, and saying why.
    refused = client.post(f"/v1/deliveries/{broken.id}/retry", headers=auth)
    assert refused.status_code == 409
    assert "was cancelled" in refused.json["message"]


def test_filters_apply_to_job_events_too(db_session, owner, settings):
    from app.services import outbox

    make_callback(db_session, owner, "http://127.0.0.1:9/ok", filter='data.result.status == "ok"')
    make_callback(db_session, owner, "http://127.0.0.1:9/any")
    made = outbox.publish(
        db_session,
        tenant_id=owner.id,
        event_type="job.succeeded",
        data={"id": "j1", "result": {"status": "late"}},
        now=datetime.now(UTC),
        subscribers=True,
    )
    assert {d.url for d in made} == {"http://127.0.0.1:9/any"}


def test_a_callback_filter_is_checked_when_set(client, auth):
    created = client.post(
        "/v1/callbacks", json={"url": URL, "filter": 'data.kind == "x"'}, headers=auth
    )
    assert created.status_code == 201 and created.json["filter"] == 'data.kind == "x"'
    for bad in ("data.kind ==", "1 + 1", "y" * 1001):
        refused = client.post("/v1/callbacks", json={"url": URL + "2", "filter": bad}, headers=auth)
        assert refused.status_code == 422
        assert "filter" in error_fields(refused)
    cleared = client.patch(
        f"/v1/callbacks/{created.json['id']}", json={"filter": None}, headers=auth
    )
    assert cleared.json["filter"] is None


def test_an_event_nobody_hears_is_still_stored(client, auth, db_session):
    response = publish(client, auth, type="user.deleted", data=None)
    assert response.status_code == 202
    assert response.json["deliveries"] == 0
    assert db_session.get(Message, uuid.UUID(response.json["id"])) is not None


def test_a_published_event_is_delivered_signed_like_a_job_event(
    client, auth, db_session, owner, receiver, http, settings
):
    callback = make_callback(db_session, owner, receiver.url("/paid"), event_types=["invoice.*"])
    response = publish(client, auth, type="invoice.paid", data={"amount": 5})
    (delivery,) = deliveries_of(db_session, response.json["id"]).values()
    assert deliver(db_session, http, settings, delivery.id) is True
    (request,) = receiver.received("/paid")
    payload = Webhook(callback.secret).verify(request.body, request.headers)
    assert payload["type"] == "invoice.paid"
    assert payload["data"] == {"amount": 5}
    assert request.headers["webhook-id"] == response.json["webhook_id"]


def test_the_same_event_id_again_is_a_repeat_and_with_other_data_a_conflict(
    client, auth, other_auth, db_session, owner
):
    make_callback(db_session, owner, URL, event_types=["invoice.paid"])
    first = publish(client, auth, type="invoice.paid", data={"amount": 1}, id="evt-1")
    again = publish(client, auth, type="invoice.paid", data={"amount": 1}, id="evt-1")
    changed = publish(client, auth, type="invoice.paid", data={"amount": 2}, id="evt-1")
    retyped = publish(client, auth, type="invoice.voided", data={"amount": 1}, id="evt-1")
    rechanneled = publish(
        client, auth, type="invoice.paid", data={"amount": 1}, id="evt-1", channels=["eu"]
    )
    rekeyed = publish(
        client, auth, type="invoice.paid", data={"amount": 1}, id="evt-1", ordering_key="k"
    )
    theirs = publish(client, other_auth, type="invoice.paid", data={"amount": 1}, id="evt-1")

    assert first.status_code == 202 and first.json["event_id"] == "evt-1"
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert again.json["created"] is False
    assert again.json["deliveries"] == 1
    assert changed.status_code == 409 and "evt-1" in changed.json["message"]
    assert retyped.status_code == rechanneled.status_code == rekeyed.status_code == 409
    # Ids are the publisher's own: another tenant's evt-1 is another event.
    assert theirs.status_code == 202 and theirs.json["id"] != first.json["id"]
    count = db_session.scalar(
        select(func.count()).select_from(Message).where(Message.event_id == "evt-1")
    )
    assert count == 2
    assert len(deliveries_of(db_session, first.json["id"])) == 1


def test_concurrent_repeats_of_one_event_id_store_it_once(engine, settings, committed_tenant):
    """Two publishers race with the same id: the second waits for the first to commit, then
    answers with its message."""
    results: list[tuple[str, bool]] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def publisher(wait_for_release: bool) -> None:
        with Session(engine) as session:
            tenant = session.get_one(Tenant, committed_tenant)
            tenant.allow_uncatalogued_event_types = True
            published = publish_event(
                session,
                tenant,
                {"type": "order.placed", "data": {"n": 1}, "id": "race"},
                settings,
                session.scalar(select(func.now())),
            )
            if wait_for_release:
                first_in.set()
                release_first.wait(10)
            session.commit()
            results.append((str(published.message.id), published.created))

    first = threading.Thread(target=publisher, args=(True,))
    first.start()
    assert first_in.wait(10)
    second = threading.Thread(target=publisher, args=(False,))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # blocked on the first's uncommitted row
    release_first.set()
    first.join(10)
    second.join(10)
    (first_id, first_created), (second_id, second_created) = results
    assert first_id == second_id
    assert (first_created, second_created) == (True, False)


def test_a_batch_is_stored_in_one_transaction_in_order(client, auth, db_session, owner):
    make_callback(db_session, owner, URL, event_types=["user.*"])
    events = [{"type": f"user.step{n}", "data": {"n": n}, "id": f"b-{n}"} for n in range(3)]
    response = client.post("/v1/events:batch", json={"events": events}, headers=auth)
    assert response.status_code == 202, response.text
    answered = response.json["data"]
    assert [a["type"] for a in answered] == ["user.step0", "user.step1", "user.step2"]
    assert all(a["created"] and a["deliveries"] == 1 for a in answered)

    # A repeat inside a batch answers with the stored message; a conflict stores none of it.
    repeat = client.post(
        "/v1/events:batch",
        json={"events": [events[0], {"type": "user.new", "data": {}, "id": "b-new"}]},
        headers=auth,
    )
    assert repeat.status_code == 202
    assert [a["created"] for a in repeat.json["data"]] == [False, True]
    conflict = client.post(
        "/v1/events:batch",
        json={
            "events": [
                {"type": "user.other", "data": {}, "id": "b-other"},
                {"type": "user.step1", "data": {"n": 99}, "id": "b-1"},
            ]
        },
        headers=auth,
    )
    assert conflict.status_code == 409
    assert db_session.scalar(select(Message).where(Message.event_id == "b-other")) is None


def test_an_ordering_key_is_stored_answered_and_said_in_the_body(client, auth, db_session, owner):
    make_callback(db_session, owner, URL, event_types=["invoice.*"])
    events = [
        {"type": "invoice.paid", "data": {"n": n}, "ordering_key": "cust-7"} for n in range(2)
    ]
    response = client.post("/v1/events:batch", json={"events": events}, headers=auth)
    assert response.status_code == 202, response.text
    first, second = response.json["data"]
    assert first["ordering_key"] == second["ordering_key"] == "cust-7"
    assert json.loads(db_session.get_one(Message, uuid.UUID(first["id"])).body)["ordering_key"] == (
        "cust-7"
    )
    (waiting,) = deliveries_of(db_session, second["id"]).values()
    assert waiting.ordering_key == "cust-7" and waiting.next_attempt_at is None  # behind the first
    unkeyed = publish(client, auth, type="invoice.paid", data={})
    assert unkeyed.json["ordering_key"] is None
    assert "ordering_key" not in json.loads(
        db_session.get_one(Message, uuid.UUID(unkeyed.json["id"])).body
    )


@pytest.mark.parametrize("key", ["cust\x007", "cust-7\n", "\tcust-7", "cust\x7f"])
def test_an_ordering_key_with_a_control_character_is_a_422_naming_it(client, auth, key):
    response = publish(client, auth, type="invoice.paid", data={}, ordering_key=key)
    assert response.status_code == 422, response.text
    assert "ordering_key" in error_fields(response)


def test_a_batch_holds_one_to_a_hundred_events_and_errors_name_the_event(client, auth):
    event = {"type": "user.created", "data": {}}
    empty = client.post("/v1/events:batch", json={"events": []}, headers=auth)
    too_many = client.post("/v1/events:batch", json={"events": [event] * 101}, headers=auth)
    bad = client.post(
        "/v1/events:batch",
        json={"events": [event, {"type": "job.succeeded", "data": {}}]},
        headers=auth,
    )
    assert empty.status_code == too_many.status_code == bad.status_code == 422
    assert "events" in error_fields(empty)
    assert "events" in error_fields(too_many)
    assert "type" in error_fields(bad)["events"]["1"]


@pytest.mark.parametrize(
    "event, field",
    [
        ({"data": {}}, "type"),
        ({"type": "invoice.paid"}, "data"),
        ({"type": "Invoice.Paid", "data": {}}, "type"),
        ({"type": "invoice..paid", "data": {}}, "type"),
        ({"type": "invoice.*", "data": {}}, "type"),
        ({"type": "x" * 101, "data": {}}, "type"),
        ({"type": "job.succeeded", "data": {}}, "type"),
        ({"type": "callback.test", "data": {}}, "type"),
        ({"type": "invoice.paid", "data": {}, "id": ""}, "id"),
        ({"type": "invoice.paid", "data": {}, "id": "x" * 256}, "id"),
        ({"type": "invoice.paid", "data": {}, "ordering_key": ""}, "ordering_key"),
        ({"type": "invoice.paid", "data": {}, "ordering_key": "k" * 256}, "ordering_key"),
        ({"type": "invoice.paid", "data": {}, "ordering_key": "a\nb"}, "ordering_key"),
        ({"type": "invoice.paid", "data": {}, "ordering_key": 7}, "ordering_key"),
        ({"type": "invoice.paid", "data": {}, "channels": ["a b"]}, "channels"),
        (
            {"type": "invoice.paid", "data": {}, "channels": [f"c{n}" for n in range(11)]},
            "channels",
        ),
        ({"type": "invoice.paid", "data": {}, "channels": "eu"}, "channels"),
        ({"type": "invoice.paid", "data": {"note": "a\u0000b"}}, "data"),
    ],
)
def test_bad_events_are_refused_naming_the_field(client, auth, db_session, event, field):
    response = publish(client, auth, **event)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)
    assert db_session.scalar(select(func.count()).select_from(Message)) == 0


def test_an_event_too_big_to_deliver_is_refused_naming_data(settings, db_session, auth):
    app = create_app(settings.replace(max_payload_bytes=200), session_factory=lambda: db_session)
    db_session.commit()
    response = app.test_client().post(
        "/v1/events", json={"type": "blob.made", "data": {"text": "x" * 300}}, headers=auth
    )
    assert response.status_code == 422
    assert "200" in error_fields(response)["data"][0]


def test_publishing_needs_an_api_key(client):
    assert client.post("/v1/events", json={"type": "a.b", "data": {}}).status_code == 401


@pytest.mark.parametrize(
    "patterns, accepted",
    [
        (["invoice.paid", "invoice.*", "job.*", "job.succeeded"], True),
        (["job.done"], False),
        (["Invoice"], False),
        (["*"], False),
        (["invoice.*.paid"], False),
        ([f"t{n}" for n in range(101)], False),
    ],
)
def test_callbacks_subscribe_to_types_and_prefix_wildcards(client, auth, patterns, accepted):
    response = client.post(
        "/v1/callbacks", json={"url": URL, "event_types": patterns}, headers=auth
    )
    assert (response.status_code == 201) is accepted, response.text
    if not accepted:
        assert "event_types" in error_fields(response)
