"""Deliveries: the response log of every callback POST, and sending one again by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.models import Delivery, DeliveryStatus
from tests.api.conftest import delivery_ids_of, run_job, submit_job
from tests.conftest import error_fields
from tests.sending import deliver

DELIVERY_KEYS = {
    "id",
    "webhook_id",
    "event_type",
    "job_id",
    "callback_id",
    "url",
    "status",
    "attempt_count",
    "ordering_key",
    "preceding_failed",
    "next_attempt_at",
    "last_attempt_at",
    "succeeded_at",
    "created_at",
    "attempts",
}
ATTEMPT_KEYS = {
    "id",
    "attempted_at",
    "request_headers",
    "response_status",
    "response_headers",
    "response_body",
    "response_body_truncated",
    "duration_ms",
    "succeeded",
    "error",
}


CLOSED_URL = "http://127.0.0.1:1/closed"  # nothing listens on port 1: refused at once


def register(client, auth, url):
    response = client.post("/v1/callbacks", json={"url": url}, headers=auth)
    assert response.status_code == 201
    return response.get_json()


@pytest.fixture
def hook(client, auth, receiver):
    """A callback registered at the real receiver's /hook."""
    return register(client, auth, receiver.url("/hook"))


@pytest.fixture
def closed_hook(client, auth):
    """A callback registered at a port that refuses connections, for tests that need no answer."""
    return register(client, auth, CLOSED_URL)


def finished_job(client, auth, db_session, settings, **body):
    """A job run to completion; its job.succeeded deliveries are pending."""
    job = submit_job(client, auth, input={"order": 7}, **body)
    assert run_job(db_session, settings, job["id"]) is True
    return job


def delivered_job(client, auth, db_session, settings, http):
    """A finished job whose one delivery has been attempted once."""
    job = finished_job(client, auth, db_session, settings)
    (delivery_id,) = delivery_ids_of(db_session, job["id"])
    deliver(db_session, http, settings, delivery_id)
    return job, delivery_id


def reload(db_session, delivery_id) -> Delivery:
    db_session.expire_all()
    return db_session.get(Delivery, delivery_id)


# The log -----------------------------------------------------------------------------------------


def test_a_jobs_deliveries_show_the_attempt_log(
    client, auth, db_session, settings, http, receiver, hook
):
    job, delivery_id = delivered_job(client, auth, db_session, settings, http)

    response = client.get(f"/v1/jobs/{job['id']}/deliveries", headers=auth)

    assert response.status_code == 200
    (delivery,) = response.get_json()["data"]
    assert set(delivery) == DELIVERY_KEYS
    assert delivery["id"] == str(delivery_id)
    assert delivery["job_id"] == job["id"]
    assert delivery["callback_id"] == hook["id"]
    assert delivery["event_type"] == "job.succeeded"
    assert delivery["url"] == receiver.url("/hook")
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 1
    assert delivery["succeeded_at"] is not None
    assert delivery["next_attempt_at"] is None
    (request,) = receiver.received("/hook")
    assert delivery["webhook_id"] == request.headers["webhook-id"]

    (attempt,) = delivery["attempts"]
    assert set(attempt) == ATTEMPT_KEYS
    assert attempt["succeeded"] is True
    assert attempt["error"] is None
    assert attempt["response_status"] == 200
    assert attempt["response_headers"]["Content-Type"] == "application/json"
    assert attempt["response_body"] == '{"ok":true}'
    assert attempt["response_body_truncated"] is False
    assert isinstance(attempt["duration_ms"], int)
    assert 0 <= attempt["duration_ms"] < 5000
    headers = attempt["request_headers"]
    assert headers["webhook-signature"] == "<redacted>"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert headers["webhook-id"] == delivery["webhook_id"]
    assert headers["webhook-timestamp"] == request.headers["webhook-timestamp"]


def test_one_delivery_shows_the_same_log(client, auth, db_session, settings, http, closed_hook):
    job, delivery_id = delivered_job(client, auth, db_session, settings, http)

    response = client.get(f"/v1/deliveries/{delivery_id}", headers=auth)

    assert response.status_code == 200
    listed = client.get(f"/v1/jobs/{job['id']}/deliveries", headers=auth).get_json()["data"]
    assert response.get_json() == listed[0]


def test_a_failed_attempt_logs_what_the_receiver_answered(
    client, auth, db_session, settings, http, receiver, hook
):
    receiver.answer("/hook", 500, body=b"database on fire", headers={"X-Trace": "abc"})
    _, delivery_id = delivered_job(client, auth, db_session, settings, http)

    body = client.get(f"/v1/deliveries/{delivery_id}", headers=auth).get_json()

    assert body["status"] == "pending"
    assert body["attempt_count"] == 1
    assert body["succeeded_at"] is None
    assert datetime.fromisoformat(body["next_attempt_at"]) > datetime.now(UTC)
    (attempt,) = body["attempts"]
    assert attempt["succeeded"] is False
    assert attempt["response_status"] == 500
    assert attempt["response_body"] == "database on fire"
    assert attempt["response_headers"]["X-Trace"] == "abc"
    assert attempt["error"] == "receiver answered 500"


def test_an_unreachable_receiver_is_logged_without_a_response(
    client, auth, db_session, settings, http, closed_hook
):
    _, delivery_id = delivered_job(client, auth, db_session, settings, http)

    (attempt,) = client.get(f"/v1/deliveries/{delivery_id}", headers=auth).get_json()["attempts"]

    assert attempt["response_status"] is None
    assert attempt["response_headers"] is None
    assert attempt["response_body"] is None
    assert attempt["error"]


def test_a_job_lists_its_ad_hoc_callback_url_delivery_too(
    client, auth, db_session, settings, closed_hook
):
    adhoc = "http://127.0.0.1:1/adhoc"
    job = finished_job(client, auth, db_session, settings, callback_url=adhoc)

    data = client.get(f"/v1/jobs/{job['id']}/deliveries", headers=auth).get_json()["data"]

    assert sorted((d["url"], d["callback_id"]) for d in data) == sorted(
        [(CLOSED_URL, closed_hook["id"]), (adhoc, None)]
    )
    assert {d["status"] for d in data} == {"pending"}
    assert all(d["attempts"] == [] for d in data)


def test_a_queued_job_has_no_deliveries_yet(client, auth, closed_hook):
    job = submit_job(client, auth)
    response = client.get(f"/v1/jobs/{job['id']}/deliveries", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"data": []}


# Retry -------------------------------------------------------------------------------------------


def test_retry_answers_202_makes_the_delivery_pending_and_enqueues_it(
    client, auth, db_session, settings, http, hook, sent_tasks
):
    _, delivery_id = delivered_job(client, auth, db_session, settings, http)
    assert reload(db_session, delivery_id).status == DeliveryStatus.SUCCEEDED
    sent_tasks.clear()
    before = datetime.now(UTC)

    response = client.post(f"/v1/deliveries/{delivery_id}/retry", headers=auth)

    assert response.status_code == 202
    body = response.get_json()
    assert body["id"] == str(delivery_id)
    assert body["status"] == "pending"
    assert len(body["attempts"]) == 1
    # A wake for the delivery workers; which delivery is due is Postgres's to say.
    assert [(t.name, t.args, t.queue) for t in sent_tasks] == [
        ("boomerang.deliver", (), "deliveries")
    ]
    stored = reload(db_session, delivery_id)
    assert stored.status == DeliveryStatus.PENDING
    assert before - timedelta(seconds=1) <= stored.next_attempt_at <= datetime.now(UTC)
    assert stored.attempt_count == len(settings.retry_schedule)


def test_a_retried_delivery_is_sent_again_with_the_same_webhook_id(
    client, auth, db_session, settings, http, receiver, hook
):
    _, delivery_id = delivered_job(client, auth, db_session, settings, http)
    client.post(f"/v1/deliveries/{delivery_id}/retry", headers=auth)

    assert deliver(db_session, http, settings, delivery_id) is True

    first, second = receiver.received("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    attempts = client.get(f"/v1/deliveries/{delivery_id}", headers=auth).get_json()["attempts"]
    assert len(attempts) == 2


def test_retrying_a_waiting_delivery_skips_its_wait(
    client, auth, db_session, settings, http, receiver, hook
):
    receiver.answer("/hook", 500, 200)
    _, delivery_id = delivered_job(client, auth, db_session, settings, http)
    assert deliver(db_session, http, settings, delivery_id) is None  # not due yet

    assert client.post(f"/v1/deliveries/{delivery_id}/retry", headers=auth).status_code == 202

    assert deliver(db_session, http, settings, delivery_id) is True
    assert reload(db_session, delivery_id).attempt_count == 2


def test_a_delivery_cancelled_with_its_callback_cannot_be_retried(
    client, auth, db_session, settings, receiver, sent_tasks, http
):
    hook = register(client, auth, receiver.url("/hook"))
    job = finished_job(client, auth, db_session, settings)
    (delivery_id,) = delivery_ids_of(db_session, job["id"])
    client.delete(f"/v1/callbacks/{hook['id']}", headers=auth)
    sent_tasks.clear()

    response = client.post(f"/v1/deliveries/{delivery_id}/retry", headers=auth)

    assert response.status_code == 409
    assert response.get_json()["code"] == 409
    assert reload(db_session, delivery_id).status == DeliveryStatus.CANCELLED
    assert sent_tasks == []
    assert deliver(db_session, http, settings, delivery_id) is None
    assert receiver.received() == []


# Other tenants -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/jobs/{job}/deliveries"),
        ("get", "/v1/deliveries/{delivery}"),
        ("post", "/v1/deliveries/{delivery}/retry"),
    ],
)
def test_another_tenants_deliveries_are_not_found(
    client, auth, other_auth, db_session, settings, http, closed_hook, sent_tasks, method, path
):
    job, delivery_id = delivered_job(client, auth, db_session, settings, http)
    waiting_until = reload(db_session, delivery_id).next_attempt_at
    sent_tasks.clear()

    response = client.open(
        path.format(job=job["id"], delivery=delivery_id), method=method.upper(), headers=other_auth
    )

    assert response.status_code == 404
    assert error_fields(response) == {}
    assert reload(db_session, delivery_id).next_attempt_at == waiting_until
    assert sent_tasks == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/jobs/{id}/deliveries"),
        ("get", "/v1/deliveries/{id}"),
        ("post", "/v1/deliveries/{id}/retry"),
    ],
)
def test_unknown_ids_are_not_found(client, auth, method, path):
    response = client.open(path.format(id=uuid.uuid4()), method=method.upper(), headers=auth)
    assert response.status_code == 404
    assert response.get_json()["status"] == "Not Found"


def test_a_finished_delivery_of_a_deleted_callback_cannot_be_retried(
    client, auth, db_session, tenant
):
    from app.models import DeliveryStatus
    from tests.factories import make_callback, make_delivery

    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/gone")
    delivery = make_delivery(db_session, callback)
    delivery.status = DeliveryStatus.SUCCEEDED
    db_session.flush()
    assert client.delete(f"/v1/callbacks/{callback.id}", headers=auth).status_code == 204
    response = client.post(f"/v1/deliveries/{delivery.id}/retry", headers=auth)
    assert response.status_code == 409
    assert response.get_json()["code"] == 409
