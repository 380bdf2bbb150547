"""GET /v1/callbacks/{id}/secret: the one read that shows a callback's secret."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.models import Callback

URL = "http://127.0.0.1:9/hook"


def register(client, auth) -> dict:
    response = client.post("/v1/callbacks", json={"url": URL}, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_it_shows_the_secret_of_a_callback(client, auth):
    created = register(client, auth)

    response = client.get(f"/v1/callbacks/{created['id']}/secret", headers=auth)

    assert response.status_code == 200
    assert response.get_json() == {"secret": created["secret"]}
    assert response.get_json()["secret"].startswith("whsec_")
    assert response.headers["Cache-Control"] == "no-store"


def test_during_a_rotation_grace_it_shows_the_previous_secret_and_when_it_expires(
    client, auth, db_session
):
    created = register(client, auth)
    rotated = client.post(f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth)

    response = client.get(f"/v1/callbacks/{created['id']}/secret", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert body["secret"] == rotated.get_json()["secret"]
    assert body["previous_secret"] == created["secret"]
    stored = db_session.get(Callback, uuid.UUID(created["id"]))
    assert datetime.fromisoformat(body["previous_secret_expires_at"]) == (
        stored.previous_secret_expires_at
    )


def test_after_the_grace_the_previous_secret_is_not_shown(client, auth, db_session):
    created = register(client, auth)
    client.post(f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth)
    stored = db_session.get(Callback, uuid.UUID(created["id"]))
    stored.previous_secret_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db_session.flush()

    response = client.get(f"/v1/callbacks/{created['id']}/secret", headers=auth)

    assert set(response.get_json()) == {"secret"}


def test_another_tenants_callback_secret_is_not_found(client, auth, other_auth):
    theirs = register(client, other_auth)

    response = client.get(f"/v1/callbacks/{theirs['id']}/secret", headers=auth)

    assert response.status_code == 404
    assert response.get_json()["message"] == "No such callback."
    assert theirs["secret"] not in response.get_data(as_text=True)


def test_the_secret_needs_a_valid_key(client, auth):
    created = register(client, auth)

    response = client.get(f"/v1/callbacks/{created['id']}/secret")

    assert response.status_code == 401


def test_no_list_get_or_patch_answer_carries_a_secret(client, auth):
    created = register(client, auth)
    rotated = client.post(f"/v1/callbacks/{created['id']}/rotate-secret", headers=auth)
    secrets = [created["secret"], rotated.get_json()["secret"]]

    answers = [
        client.get("/v1/callbacks", headers=auth),
        client.get(f"/v1/callbacks/{created['id']}", headers=auth),
        client.patch(f"/v1/callbacks/{created['id']}", json={"description": "x"}, headers=auth),
        client.post(f"/v1/callbacks/{created['id']}/enable", headers=auth),
    ]

    for answer in answers:
        assert answer.status_code == 200
        text = answer.get_data(as_text=True)
        assert "secret" not in text
        for secret in secrets:
            assert secret not in text
            assert secret.removeprefix("whsec_") not in text
