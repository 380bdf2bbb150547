"""Every portal form carries a per-session CSRF token, and a POST without it changes nothing."""

from __future__ import annotations

import uuid

import pytest

from app.models import Callback, DeliveryStatus
from tests.factories import make_callback, make_delivery

ANY_ID = "00000000-0000-4000-8000-000000000000"


def test_a_sign_in_without_the_token_is_refused(portal, tenant):
    portal.client.get("/portal/sign-in")

    response = portal.client.post("/portal/sign-in", data={"api_key": tenant.api_key})

    assert response.status_code == 400
    assert "out of date" in response.get_data(as_text=True)
    assert portal.client.get("/portal/").status_code == 303


def test_a_sign_in_with_no_session_at_all_is_refused(client, tenant):
    response = client.post("/portal/sign-in", data={"api_key": tenant.api_key, "csrf_token": "x"})

    assert response.status_code == 400


def test_a_sign_out_without_the_token_leaves_the_session(signed_in):
    response = signed_in.client.post("/portal/sign-out")

    assert response.status_code == 400
    assert signed_in.client.get("/portal/").status_code == 200


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_registering_a_callback_without_the_right_token_is_refused(
    signed_in, db_session, receiver, token
):
    data = {"url": receiver.url("/hook"), "event_types": ["job.succeeded"]}
    if token is not None:
        data["csrf_token"] = token

    response = signed_in.client.post("/portal/callbacks/new", data=data)

    assert response.status_code == 400
    assert db_session.query(Callback).count() == 0


def test_a_token_from_another_session_is_refused(signed_in, app, tenant, db_session, receiver):
    from tests.portal.conftest import Portal

    other = Portal(app.test_client())
    other.sign_in(tenant.api_key)
    foreign_token = other.token()

    response = signed_in.client.post(
        "/portal/callbacks/new",
        data={"url": receiver.url("/hook"), "csrf_token": foreign_token},
    )

    assert response.status_code == 400
    assert db_session.query(Callback).count() == 0


@pytest.mark.parametrize(
    "action", ["enable", "disable", "secret", "rotate-secret", "test", "recover"]
)
def test_every_callback_action_wants_the_token(signed_in, tenant, db_session, action, sent_tasks):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    secret = callback.secret

    response = signed_in.client.post(
        f"/portal/callbacks/{callback.id}/{action}", data={"since": "2020-01-01T00:00"}
    )

    assert response.status_code == 400
    assert secret not in response.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.get(Callback, callback.id).secret == secret
    assert sent_tasks == []


def test_a_retry_without_the_token_is_refused(signed_in, tenant, db_session, sent_tasks):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    delivery = make_delivery(db_session, callback)
    delivery.status = DeliveryStatus.FAILED
    db_session.commit()  # sends the new delivery's wake, so only the retry's would be left
    sent_tasks.clear()

    response = signed_in.client.post(f"/portal/deliveries/{delivery.id}/retry")

    assert response.status_code == 400
    db_session.expire_all()
    assert delivery.status == DeliveryStatus.FAILED
    assert sent_tasks == []


def test_every_form_on_a_page_carries_the_token(signed_in, tenant, db_session):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")

    page = signed_in.text(f"/portal/callbacks/{callback.id}")

    forms = page.count('method="post"')
    assert forms >= 5  # sign out, test, disable, reveal, rotate, recover
    assert page.count('name="csrf_token"') == forms


def test_an_unknown_id_is_not_looked_up_before_the_token_is_checked(signed_in):
    response = signed_in.client.post(f"/portal/callbacks/{uuid.UUID(ANY_ID)}/rotate-secret")

    assert response.status_code == 400
