"""Custom headers on a callback: sent with every delivery, within strict rules."""

from __future__ import annotations

import pytest

from tests.factories import make_delivery
from tests.sending import deliver
from workers.delivery.http import OutboundClient


def test_custom_headers_are_stored_and_sent_with_each_delivery(
    client, auth, db_session, settings, receiver
):
    response = client.post(
        "/v1/callbacks",
        json={"url": receiver.url("/hook"), "headers": {"X-Api-Token": "t0k", "X-Env": "prod"}},
        headers=auth,
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["headers"] == {"X-Api-Token": "t0k", "X-Env": "prod"}

    from app.models import Callback

    callback = db_session.get(Callback, response.get_json()["id"])
    delivery = make_delivery(db_session, callback)
    db_session.commit()
    assert deliver(db_session, OutboundClient(settings), settings, delivery.id) is True
    (request,) = receiver.received("/hook")
    assert request.headers["X-Api-Token"] == "t0k"
    assert request.headers["X-Env"] == "prod"
    assert request.headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Connection": "close"},
        {"Transfer-Encoding": "chunked"},
        {"Content-Length": "0"},
        {"Proxy-Authorization": "x"},
        {"webhook-id": "msg_forged"},
        {"Webhook-Signature": "v1,forged"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"TraceState": "vendor=forged"},
        {"X-Split": "a\r\nX-Injected: 1"},
        {"X-Name-Ending-In-A-Line-Break\n": "x"},
        {"X-Nul": "a\x00b"},
        {"Bad Name": "x"},
        {"X-Dup": "1", "x-dup": "2"},
    ],
    ids=lambda headers: next(iter(headers)),
)
def test_a_forbidden_or_malformed_header_is_a_422_naming_headers(client, auth, headers):
    response = client.post(
        "/v1/callbacks", json={"url": "http://127.0.0.1:9/hook", "headers": headers}, headers=auth
    )
    assert response.status_code == 422, response.get_json()
    assert "headers" in str(response.get_json()["errors"])


def test_too_many_headers_are_refused(client, auth, settings):
    headers = {f"X-H{n}": "v" for n in range(settings.max_callback_headers + 1)}
    response = client.post(
        "/v1/callbacks", json={"url": "http://127.0.0.1:9/hook", "headers": headers}, headers=auth
    )
    assert response.status_code == 422
    assert "at most" in str(response.get_json()["errors"]["json"]["headers"])


def test_headers_can_be_changed_with_patch(client, auth):
    created = client.post("/v1/callbacks", json={"url": "http://127.0.0.1:9/h"}, headers=auth)
    callback_id = created.get_json()["id"]
    response = client.patch(
        f"/v1/callbacks/{callback_id}", json={"headers": {"X-New": "1"}}, headers=auth
    )
    assert response.status_code == 200
    assert response.get_json()["headers"] == {"X-New": "1"}
    bad = client.patch(
        f"/v1/callbacks/{callback_id}", json={"headers": {"Host": "x"}}, headers=auth
    )
    assert bad.status_code == 422
