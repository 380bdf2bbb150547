"""What a callback may be registered with: each loose edge found in review, refused with a 422
naming the field, and credentials in custom headers never shown in full."""

from __future__ import annotations

import pytest

from app.headers import MASKED
from tests.conftest import error_fields

URL = "http://127.0.0.1:9/hook"


def register(client, auth, **body):
    return client.post("/v1/callbacks", json={"url": URL, **body}, headers=auth)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.0.0.1:0/hook"}, "url"),
        ({"url": "http://example.com/" + "a" * 3000}, "url"),
        ({"success_status": 200.5}, "success_status"),
        ({"success_status": "201"}, "success_status"),
        ({"headers": {"X-Token": "a\x01b"}}, "headers"),
        ({"headers": {"X-Token": "a\x7fb"}}, "headers"),
        ({"headers": {"X-Token": " padded"}}, "headers"),
        ({"headers": {"X-Token": "caf\u00e9 \u2603"}}, "headers"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"max_concurrency": "10"}, "max_concurrency"),
        ({"max_concurrency": 10_001}, "max_concurrency"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"rate_limit_per_second": -5}, "rate_limit_per_second"),
        ({"rate_limit_per_second": "NaN"}, "rate_limit_per_second"),
        ({"rate_limit_per_second": "Infinity"}, "rate_limit_per_second"),
        ({"rate_limit_per_second": "fast"}, "rate_limit_per_second"),
    ],
)
def test_it_refuses_what_cannot_be_a_callback(client, auth, body, field):
    response = register(client, auth, **body)
    assert response.status_code == 422, response.get_json()
    assert field in error_fields(response)


def test_a_callbacks_own_limits_are_kept_changed_and_cleared(client, auth):
    created = register(client, auth, max_concurrency=5, rate_limit_per_second=2.5).get_json()
    assert (created["max_concurrency"], created["rate_limit_per_second"]) == (5, 2.5)
    path = f"/v1/callbacks/{created['id']}"
    changed = client.patch(path, json={"max_concurrency": 7}, headers=auth).get_json()
    assert (changed["max_concurrency"], changed["rate_limit_per_second"]) == (7, 2.5)
    cleared = client.patch(
        path, json={"max_concurrency": None, "rate_limit_per_second": None}, headers=auth
    ).get_json()
    assert (cleared["max_concurrency"], cleared["rate_limit_per_second"]) == (None, None)
    assert (
        register(client, auth, url="http://127.0.0.1:9/other").get_json()["max_concurrency"] is None
    )


def test_enabled_must_be_a_boolean_not_a_word_that_looks_like_one(client, auth):
    callback = register(client, auth).get_json()
    for value in ("yes", 1, "true"):
        response = client.patch(
            f"/v1/callbacks/{callback['id']}", json={"enabled": value}, headers=auth
        )
        assert response.status_code == 422
        assert "enabled" in error_fields(response)


def test_latin1_and_tabs_inside_a_header_value_are_fine(client, auth):
    response = register(client, auth, headers={"X-Note": "caf\u00e9\tcr\u00e8me"})
    assert response.status_code == 201


def test_credentials_in_custom_headers_are_shown_masked_and_kept_when_sent_back(
    client, auth, db_session
):
    secret = {"Authorization": "Bearer s3cret", "Cookie": "session=abc", "X-Plain": "visible"}
    created = register(client, auth, headers=secret).get_json()
    assert created["headers"] == {"Authorization": MASKED, "Cookie": MASKED, "X-Plain": "visible"}
    listed = client.get("/v1/callbacks", headers=auth).get_json()["data"][0]
    assert listed["headers"]["Authorization"] == MASKED
    # A PATCH that sends the headers back as shown keeps the stored credentials.
    shown = client.get(f"/v1/callbacks/{created['id']}", headers=auth).get_json()["headers"]
    response = client.patch(
        f"/v1/callbacks/{created['id']}",
        json={"headers": {**shown, "X-Plain": "changed"}},
        headers=auth,
    )
    assert response.status_code == 200
    from app.models import Callback

    db_session.expire_all()
    stored = db_session.get(Callback, created["id"]).headers
    assert stored == {**secret, "X-Plain": "changed"}


def test_a_key_is_not_made_from_a_body_that_is_refused(client, auth):
    before = len(client.get("/v1/keys", headers=auth).get_json()["data"])
    response = client.post("/v1/keys", json={"name": "ops", "scopes": ["all"]}, headers=auth)
    assert response.status_code == 422
    assert len(client.get("/v1/keys", headers=auth).get_json()["data"]) == before
    assert client.post("/v1/keys", headers=auth).status_code == 201
