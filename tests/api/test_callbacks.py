"""/v1/callbacks: register, list, change, delete, rotate secrets and send test events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app import create_app, events
from app.models import Callback, Delivery, DeliveryStatus, Message
from app.services import outbox
from app.services.callbacks import signing_secrets
from tests.api.conftest import delivery_ids_of, run_job, submit_job
from tests.conftest import error_fields
from tests.factories import make_callback
from tests.sending import deliver
from workers.delivery.store import claim_deliveries

URL = "http://127.0.0.1:9/hook"
CALLBACK_KEYS = {
    "id",
    "url",
    "event_types",
    "channels",
    "filter",
    "description",
    "success_status",
    "max_concurrency",
    "rate_limit_per_second",
    "retry_schedule",
    "headers",
    "format",
    "format_version",
    "enabled",
    "disabled_reason",
    "created_at",
    "updated_at",
}


def register(client, auth, **body):
    response = client.post("/v1/callbacks", json={"url": URL, **body}, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def reload_delivery(db_session, delivery_id) -> Delivery:
    db_session.expire_all()
    return db_session.get(Delivery, delivery_id)


def publish_to(db_session, owner, callback) -> Delivery:
    (made,) = outbox.publish(
        db_session,
        tenant_id=owner.id,
        event_type=events.JOB_SUCCEEDED,
        data={"id": "job-1"},
        now=datetime.now(UTC),
        callbacks=[callback],
    )
    db_session.commit()
    return db_session.get_one(Delivery, made.id)


# Create ------------------------------------------------------------------------------------------


def test_it_registers_a_callback_and_shows_its_secret_once(client, auth):
    response = client.post("/v1/callbacks", json={"url": URL}, headers=auth)

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == CALLBACK_KEYS | {"secret"}
    assert uuid.UUID(body["id"])
    assert body["url"] == URL
    assert body["secret"].startswith("whsec_")
    assert body["event_types"] == ["job.succeeded", "job.failed"]
    assert body["enabled"] is True
    assert body["disabled_reason"] is None
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


def test_it_stores_the_given_event_types_description_and_success_status(client, auth):
    body = register(
        client,
        auth,
        event_types=["job.progress", "job.failed"],
        description="billing",
        success_status=204,
    )
    assert body["event_types"] == ["job.progress", "job.failed"]
    assert body["description"] == "billing"
    assert body["success_status"] == 204


def test_each_callback_gets_its_own_secret(client, auth):
    first = register(client, auth)["secret"]
    assert first != register(client, auth, url="http://127.0.0.1:9/other")["secret"]


def test_it_lists_only_the_tenants_own_callbacks_without_secrets(
    client, auth, other_auth, db_session
):
    first = register(client, auth)
    second = register(client, auth, url="http://127.0.0.1:9/second")
    register(client, other_auth, url="http://127.0.0.1:9/theirs")

    response = client.get("/v1/callbacks", headers=auth)

    assert response.status_code == 200
    data = response.get_json()["data"]
    assert [c["id"] for c in data] == [first["id"], second["id"]]
    for callback in data:
        assert set(callback) == CALLBACK_KEYS
        assert "secret" not in callback


def test_it_shows_one_callback_without_its_secret(client, auth):
    created = register(client, auth, description="one")

    response = client.get(f"/v1/callbacks/{created['id']}", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == CALLBACK_KEYS
    assert body["id"] == created["id"]
    assert body["description"] == "one"


def test_it_rejects_a_callback_without_a_url(client, auth):
    response = client.post("/v1/callbacks", json={"description": "no url"}, headers=auth)
    assert response.status_code == 422
    assert "url" in error_fields(response)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", 123),
        ("event_types", "job.succeeded"),
        ("event_types", [1]),
        ("description", 5),
        ("success_status", "two hundred"),
    ],
)
def test_it_rejects_a_field_of_the_wrong_type(client, auth, field, value):
    response = client.post("/v1/callbacks", json={"url": URL, field: value}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == [field]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://x",
        "ftp://example.com/hook",
        "http://",
        "javascript:alert(1)",
        "http://user:password@127.0.0.1/hook",
        "http://127.0.0.1:99999/hook",
    ],
)
def test_it_rejects_an_invalid_url(client, auth, url):
    response = client.post("/v1/callbacks", json={"url": url}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["url"]


def test_it_rejects_an_unknown_event_type(client, auth):
    response = client.post(
        "/v1/callbacks", json={"url": URL, "event_types": ["job.done"]}, headers=auth
    )
    assert response.status_code == 422
    (message,) = error_fields(response)["event_types"]
    assert "job.done" in message


def test_it_rejects_an_empty_list_of_event_types(client, auth):
    response = client.post("/v1/callbacks", json={"url": URL, "event_types": []}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["event_types"]


def test_callback_test_is_not_an_event_type_to_subscribe_to(client, auth):
    response = client.post(
        "/v1/callbacks", json={"url": URL, "event_types": ["callback.test"]}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["event_types"]


@pytest.mark.parametrize("status", [99, 600])
def test_it_rejects_a_success_status_that_is_not_an_http_status(client, auth, status):
    response = client.post(
        "/v1/callbacks", json={"url": URL, "success_status": status}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["success_status"]


def test_a_client_cannot_choose_its_own_secret(client, auth):
    response = client.post("/v1/callbacks", json={"url": URL, "secret": "whsec_mine"}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["secret"]


def test_it_rejects_a_nul_character_that_postgres_could_not_store(client, auth):
    response = client.post(
        "/v1/callbacks", json={"url": URL, "description": "a\x00b"}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["description"]


def test_it_rejects_a_private_address_unless_private_networks_are_allowed(
    settings, db_session, auth
):
    strict = create_app(
        settings.replace(allow_private_networks=False), session_factory=lambda: db_session
    )
    db_session.commit()
    client = strict.test_client()

    for url in ("http://127.0.0.1/hook", "http://10.0.0.8/hook", "http://169.254.169.254/"):
        response = client.post("/v1/callbacks", json={"url": url}, headers=auth)
        assert response.status_code == 422, url
        (message,) = error_fields(response)["url"]
        assert "not a public address" in message


# Update ------------------------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(client, auth):
    created = register(client, auth, description="before", success_status=200)

    response = client.patch(
        f"/v1/callbacks/{created['id']}",
        json={"url": "http://127.0.0.1:9/moved", "event_types": ["job.failed"]},
        headers=auth,
    )

    assert response.status_code == 200
    body = response.get_json()
    assert "secret" not in body
    assert body["url"] == "http://127.0.0.1:9/moved"
    assert body["event_types"] == ["job.failed"]
    assert body["description"] == "before"
    assert body["success_status"] == 200
    assert client.get(f"/v1/callbacks/{created['id']}", headers=auth).get_json() == body


def test_patch_can_clear_the_description_and_success_status(client, auth):
    created = register(client, auth, description="before", success_status=200)
    response = client.patch(
        f"/v1/callbacks/{created['id']}",
        json={"description": None, "success_status": None},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.get_json()["description"] is None
    assert response.get_json()["success_status"] is None


def test_a_callback_disabled_with_patch_hears_no_more_events(
    client, auth, db_session, settings, sent_tasks
):
    created = register(client, auth)

    response = client.patch(f"/v1/callbacks/{created['id']}", json={"enabled": False}, headers=auth)

    assert response.status_code == 200
    assert response.get_json()["enabled"] is False
    assert response.get_json()["disabled_reason"] == "disabled by the tenant"
    job = submit_job(client, auth)
    assert run_job(db_session, settings, job["id"]) is True
    assert delivery_ids_of(db_session, job["id"]) == []


def test_re_enabling_with_patch_clears_the_disabled_reason(client, auth):
    created = register(client, auth)
    path = f"/v1/callbacks/{created['id']}"
    client.patch(path, json={"enabled": False}, headers=auth)

    response = client.patch(path, json={"enabled": True}, headers=auth)

    assert response.status_code == 200
    assert response.get_json()["enabled"] is True
    assert response.get_json()["disabled_reason"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "not a url"),
        ("url", "ftp://x"),
        ("url", None),
        ("enabled", "maybe"),
        ("enabled", None),
        ("event_types", []),
        ("event_types", ["job.done"]),
        ("success_status", 1000),
        ("secret", "whsec_mine"),
    ],
)
def test_patch_rejects_an_invalid_field(client, auth, field, value):
    created = register(client, auth)
    response = client.patch(f"/v1/callbacks/{created['id']}", json={field: value}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == [field]
    unchanged = client.get(f"/v1/callbacks/{created['id']}", headers=auth).get_json()
    assert unchanged["url"] == URL
    assert unchanged["enabled"] is True


# Delete ------------------------------------------------------------------------------------------


def test_delete_answers_204_and_the_callback_is_gone(client, auth):
    created = register(client, auth)

    response = client.delete(f"/v1/callbacks/{created['id']}", headers=auth)

    assert response.status_code == 204
    assert response.get_data() == b""
    assert client.get(f"/v1/callbacks/{created['id']}", headers=auth).status_code == 404
    assert client.get("/v1/callbacks", headers=auth).get_json()["data"] == []


def test_delete_cancels_deliveries_waiting_for_the_callback_and_keeps_the_log(
    client, auth, db_session, owner
):
    callback = make_callback(db_session, owner, URL)
    waiting = publish_to(db_session, owner, callback)
    done = publish_to(db_session, owner, callback)
    done.status = DeliveryStatus.SUCCEEDED
    done.next_attempt_at = None
    other_callback = make_callback(db_session, owner, "http://127.0.0.1:9/other")
    untouched = publish_to(db_session, owner, other_callback)

    assert client.delete(f"/v1/callbacks/{callback.id}", headers=auth).status_code == 204

    cancelled = reload_delivery(db_session, waiting.id)
    assert cancelled.status == DeliveryStatus.CANCELLED
    assert cancelled.next_attempt_at is None
    assert cancelled.callback_id is None
    assert reload_delivery(db_session, done.id).status == DeliveryStatus.SUCCEEDED
    assert reload_delivery(db_session, untouched.id).status == DeliveryStatus.PENDING
    shown = client.get(f"/v1/deliveries/{waiting.id}", headers=auth)
    assert shown.status_code == 200
    assert shown.get_json()["status"] == "cancelled"


def test_a_deleted_callback_is_never_sent_to_again(
    client, auth, db_session, owner, settings, http, receiver
):
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    waiting = publish_to(db_session, owner, callback)

    client.delete(f"/v1/callbacks/{callback.id}", headers=auth)

    assert deliver(db_session, http, settings, waiting.id) is None
    assert receiver.received() == []


# Rotate the secret -------------------------------------------------------------------------------


def test_rotating_the_secret_shows_a_new_one(client, auth, db_session):
    created = register(client, auth)

    response = client.post(f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == created["id"]
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != created["secret"]
    stored = db_session.get(Callback, uuid.UUID(created["id"]))
    assert stored.secret == body["secret"]
    assert stored.previous_secret == created["secret"]


def test_a_delivery_prepared_after_rotation_is_signed_with_the_new_and_the_old_secret(
    client, auth, db_session, owner, settings
):
    created = register(client, auth)
    rotated = client.post(f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth)
    new_secret = rotated.get_json()["secret"]
    callback = db_session.get(Callback, uuid.UUID(created["id"]))
    delivery = publish_to(db_session, owner, callback)
    now = datetime.now(UTC)

    (claimed,) = claim_deliveries(db_session, now, settings, limit=1, only=[delivery.id])

    assert claimed is not None
    assert claimed.secrets == (new_secret, created["secret"])
    assert signing_secrets(callback, now) == [new_secret, created["secret"]]


def test_after_the_grace_period_only_the_new_secret_signs(client, auth, db_session, settings):
    created = register(client, auth)
    rotated = client.post(f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth)
    callback = db_session.get(Callback, uuid.UUID(created["id"]))

    later = datetime.now(UTC) + timedelta(seconds=settings.secret_rotation_grace_seconds + 1)

    assert signing_secrets(callback, later) == [rotated.get_json()["secret"]]


def test_a_receiver_verifies_a_delivery_with_either_secret_after_rotation(
    client, auth, db_session, owner, settings, receiver, http
):
    created = register(client, auth, url=receiver.url("/hook"))
    new_secret = client.post(
        f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth
    ).get_json()["secret"]
    delivery = publish_to(db_session, owner, db_session.get(Callback, uuid.UUID(created["id"])))

    assert deliver(db_session, http, settings, delivery.id) is True

    (request,) = receiver.received("/hook")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new_secret).verify(request.body, request.headers)["type"] == "job.succeeded"
    assert Webhook(created["secret"]).verify(request.body, request.headers)["type"]


# Test events -------------------------------------------------------------------------------------


def test_sending_a_test_event_queues_a_callback_test_delivery(client, auth, db_session, sent_tasks):
    created = register(client, auth)
    sent_tasks.clear()

    response = client.post(f"/v1/callbacks/{created['id']}/test", headers=auth)

    assert response.status_code == 202
    body = response.get_json()
    assert body["event_type"] == "callback.test"
    assert body["status"] == "pending"
    assert body["callback_id"] == created["id"]
    assert body["url"] == URL
    assert body["job_id"] is None
    assert body["attempts"] == []
    assert body["webhook_id"].startswith("msg_")
    delivery = db_session.get(Delivery, uuid.UUID(body["id"]))
    assert delivery.status == DeliveryStatus.PENDING
    message = db_session.get(Message, delivery.message_id)
    assert message.event_type == "callback.test"
    assert [(t.name, t.args) for t in sent_tasks] == [("boomerang.deliver", ())]


def test_a_test_event_reaches_a_disabled_callback_too(
    client, auth, db_session, settings, receiver, http
):
    created = register(client, auth, url=receiver.url("/hook"))
    client.patch(f"/v1/callbacks/{created['id']}", json={"enabled": False}, headers=auth)

    response = client.post(f"/v1/callbacks/{created['id']}/test", headers=auth)

    assert response.status_code == 202
    assert deliver(db_session, http, settings, uuid.UUID(response.get_json()["id"])) is True
    (request,) = receiver.received("/hook")
    payload = Webhook(created["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "callback.test"
    assert payload["data"]["callback_id"] == created["id"]


# Enable and recover ------------------------------------------------------------------------------


def test_enable_turns_a_disabled_callback_back_on(client, auth, db_session, owner):
    callback = make_callback(
        db_session, owner, URL, enabled=False, disabled_reason="receiver answered 410 Gone"
    )

    response = client.post(f"/v1/callbacks/{callback.id}/enable", headers=auth)

    assert response.status_code == 200
    assert response.get_json()["enabled"] is True
    assert response.get_json()["disabled_reason"] is None


def test_recover_sends_failed_deliveries_again(client, auth, db_session, owner, sent_tasks):
    callback = make_callback(db_session, owner, URL)
    failed = publish_to(db_session, owner, callback)
    failed.status = DeliveryStatus.FAILED
    failed.next_attempt_at = None
    db_session.commit()
    sent_tasks.clear()
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    response = client.post(
        f"/v1/callbacks/{callback.id}/recover", query_string={"since": since}, headers=auth
    )

    assert response.status_code == 202
    assert response.get_json() == {"recovered": 1}
    assert reload_delivery(db_session, failed.id).status == DeliveryStatus.PENDING
    assert [(t.name, t.args) for t in sent_tasks] == [("boomerang.deliver", ())]


@pytest.mark.parametrize(
    "since",
    ["2037-02-11T01:00:39-16:49", "2020-01-01T00:00:00+23:59", "2020-01-01T00:00:00"],
)
def test_recover_takes_any_offset_python_reads_although_postgres_refuses_some(
    client, auth, db_session, owner, since
):
    # Found by the fuzz test: Postgres refuses offsets past 15:59, which was a 500.
    callback = make_callback(db_session, owner, URL)
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover", query_string={"since": since}, headers=auth
    )
    assert response.status_code == 202
    assert response.get_json() == {"recovered": 0}


@pytest.mark.parametrize(
    "query",
    [{}, {"since": "yesterday"}, {"since": "9999-12-31T23:00:00-05:00"}],
)
def test_recover_needs_a_valid_since(client, auth, db_session, owner, query):
    callback = make_callback(db_session, owner, URL)
    response = client.post(f"/v1/callbacks/{callback.id}/recover", query_string=query, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["since"]


# Another tenant's callbacks ----------------------------------------------------------------------

SINCE = {"since": "2020-01-01T00:00:00+00:00"}
ID_ROUTES = [
    ("get", "", None, None),
    ("patch", "", {"description": "mine now"}, None),
    ("delete", "", None, None),
    ("post", "/rotate-secret", None, None),
    ("post", "/test", None, None),
    ("post", "/enable", None, None),
    ("post", "/recover", None, SINCE),
]


@pytest.mark.parametrize(("method", "suffix", "body", "query"), ID_ROUTES)
def test_another_tenants_callback_is_not_found(
    client, auth, other_auth, db_session, sent_tasks, method, suffix, body, query
):
    theirs = register(client, other_auth)

    response = client.open(
        f"/v1/callbacks/{theirs['id']}{suffix}",
        method=method.upper(),
        json=body,
        query_string=query,
        headers=auth,
    )

    assert response.status_code == 404
    assert response.get_json()["message"] == "No such callback."
    stored = db_session.scalar(select(Callback).where(Callback.id == uuid.UUID(theirs["id"])))
    assert stored is not None
    assert stored.secret == theirs["secret"]
    assert stored.description is None
    assert stored.enabled is True
    assert sent_tasks == []


@pytest.mark.parametrize(("method", "suffix", "body", "query"), ID_ROUTES)
def test_an_unknown_callback_is_not_found(client, auth, method, suffix, body, query):
    response = client.open(
        f"/v1/callbacks/{uuid.uuid4()}{suffix}",
        method=method.upper(),
        json=body,
        query_string=query,
        headers=auth,
    )
    assert response.status_code == 404
    assert error_fields(response) == {}


def test_a_url_the_tenant_registered_already_is_refused_on_create_and_on_change(
    client, auth, other_auth
):
    register(client, auth)
    other = register(client, auth, url="http://127.0.0.1:9/other")
    response = client.post("/v1/callbacks", json={"url": URL}, headers=auth)
    assert response.status_code == 422
    assert "already registered" in error_fields(response)["url"][0]
    response = client.patch(f"/v1/callbacks/{other['id']}", json={"url": URL}, headers=auth)
    assert response.status_code == 422
    # Another tenant may of course register the same URL.
    assert client.post("/v1/callbacks", json={"url": URL}, headers=other_auth).status_code == 201


def test_a_tenant_cannot_register_more_callbacks_than_the_cap(client, auth, settings, db_session):
    capped = settings.replace(max_callbacks_per_tenant=2)
    from app import create_app

    app = create_app(capped, session_factory=lambda: db_session)
    capped_client = app.test_client()
    for n in range(2):
        db_session.commit()
        ok = capped_client.post("/v1/callbacks", json={"url": f"{URL}/{n}"}, headers=auth)
        assert ok.status_code == 201
    db_session.commit()
    response = capped_client.post("/v1/callbacks", json={"url": f"{URL}/2"}, headers=auth)
    assert response.status_code == 409
    assert "BOOMERANG_MAX_CALLBACKS_PER_TENANT" in response.get_json()["message"]


def test_one_event_makes_one_delivery_per_distinct_url(db_session, owner):
    from datetime import UTC, datetime

    hook = make_callback(db_session, owner, URL)
    made = outbox.publish(
        db_session,
        tenant_id=owner.id,
        event_type=events.JOB_SUCCEEDED,
        data={},
        now=datetime.now(UTC),
        subscribers=True,
        extra_urls=[URL, URL, "http://127.0.0.1:9/adhoc"],
    )
    assert {(d.callback_id, d.url) for d in made} == {
        (hook.id, URL),
        (None, "http://127.0.0.1:9/adhoc"),
    }
    assert len(made) == 2


def test_a_callback_may_carry_its_own_retry_schedule(client, auth):
    created = client.post(
        "/v1/callbacks", json={"url": URL, "retry_schedule": [10, 60, 600]}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json["retry_schedule"] == [10, 60, 600]
    path = f"/v1/callbacks/{created.json['id']}"
    assert (
        client.patch(path, json={"retry_schedule": []}, headers=auth).json["retry_schedule"] == []
    )
    assert (
        client.patch(path, json={"retry_schedule": None}, headers=auth).json["retry_schedule"]
        is None
    )
    for bad in ([0], [-5], [7 * 86_400 + 1], [1] * 31, ["10"], 10):
        refused = client.patch(path, json={"retry_schedule": bad}, headers=auth)
        assert refused.status_code == 422, bad
        assert "retry_schedule" in error_fields(refused)
