"""Each callback receives its pinned body format, signed the Standard Webhooks way, end to end
through the delivery pipeline and a real local receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app import events
from app.models import Delivery
from app.services import outbox
from tests.factories import make_callback, make_job
from tests.sending import deliver


def content_type(headers: dict[str, str]) -> str:
    return {name.lower(): value for name, value in headers.items()}["content-type"]


def publish(db_session, owner, callbacks=(), urls=(), job_id=None) -> list[Delivery]:
    deliveries = outbox.publish(
        db_session,
        tenant_id=owner.id,
        event_type=events.JOB_SUCCEEDED,
        data={"id": "job-1", "result": {"answer": 42}},
        now=datetime.now(UTC),
        job_id=job_id,
        callbacks=callbacks,
        extra_urls=urls,
    )
    db_session.commit()
    return deliveries


def test_a_cloudevents_callback_gets_a_signed_structured_cloudevent(
    db_session, settings, owner, receiver, http
):
    job = make_job(db_session, owner)
    callback = make_callback(db_session, owner, receiver.url("/ce"), format="cloudevents")
    (delivery,) = publish(db_session, owner, [callback], job_id=job.id)

    assert deliver(db_session, http, settings, delivery.id) is True

    (request,) = receiver.received("/ce")
    assert content_type(request.headers) == "application/cloudevents+json"
    Webhook(callback.secret).verify(request.body, request.headers)
    event = from_http_event(HTTPMessage(dict(request.headers), request.body))
    webhook_id = f"msg_{delivery.message_id.hex}"
    assert request.headers["webhook-id"] == webhook_id
    assert event.get_id() == webhook_id
    assert event.get_type() == "job.succeeded"
    assert event.get_source() == f"/boomerang/tenants/{owner.id}"
    assert event.get_subject() == str(job.id)
    assert event.get_data() == {"id": "job-1", "result": {"answer": 42}}


def test_a_retry_sends_the_same_cloudevent_bytes(db_session, settings, owner, receiver, http):
    receiver.answer("/ce", 500, 200)
    callback = make_callback(db_session, owner, receiver.url("/ce"), format="cloudevents")
    (delivery,) = publish(db_session, owner, [callback])

    assert deliver(db_session, http, settings, delivery.id) is False
    db_session.expire_all()
    waiting = db_session.scalar(select(Delivery).where(Delivery.id == delivery.id))
    waiting.next_attempt_at = datetime.now(UTC)
    db_session.commit()
    assert deliver(db_session, http, settings, delivery.id) is True

    first, second = receiver.received("/ce")
    assert first.body == second.body
    assert json.loads(first.body)["specversion"] == "1.0"


def test_one_event_goes_to_each_callback_in_its_own_format(
    db_session, settings, owner, receiver, http
):
    envelope = make_callback(db_session, owner, receiver.url("/envelope"))
    cloudevents = make_callback(db_session, owner, receiver.url("/ce"), format="cloudevents")
    deliveries = publish(db_session, owner, [envelope, cloudevents], urls=[receiver.url("/adhoc")])

    for delivery in deliveries:
        assert deliver(db_session, http, settings, delivery.id) is True

    (as_envelope,) = receiver.received("/envelope")
    (as_cloudevent,) = receiver.received("/ce")
    (adhoc,) = receiver.received("/adhoc")
    assert content_type(as_envelope.headers) == "application/json"
    assert content_type(adhoc.headers) == "application/json"
    assert set(Webhook(envelope.secret).verify(as_envelope.body, as_envelope.headers)) == {
        "type",
        "timestamp",
        "data",
    }
    assert adhoc.body == as_envelope.body
    Webhook(owner.signing_secret).verify(adhoc.body, adhoc.headers)
    Webhook(cloudevents.secret).verify(as_cloudevent.body, as_cloudevent.headers)
    assert json.loads(as_cloudevent.body)["data"] == json.loads(as_envelope.body)["data"]
