"""/v1/keys: create, list and revoke the tenant's own API keys."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import select

from app.models import ApiKey

KEY_KEYS = {"id", "prefix", "created_at", "revoked_at"}


def create_key(client, auth) -> dict:
    response = client.post("/v1/keys", headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def test_it_creates_a_key_and_shows_it_in_full_once(client, auth, db_session, owner):
    response = client.post("/v1/keys", headers=auth)

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "prefix", "api_key", "created_at"}
    assert body["api_key"].startswith(f"{body['prefix']}.")
    stored = db_session.get(ApiKey, uuid.UUID(body["id"]))
    assert stored.tenant_id == owner.id
    assert stored.revoked_at is None
    secret = body["api_key"].partition(".")[2]
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored.secret_hash


def test_a_new_key_authenticates_as_the_same_tenant(client, auth):
    created = create_key(client, auth)
    mine = client.post("/v1/callbacks", json={"url": "http://127.0.0.1:9/a"}, headers=auth)

    response = client.get("/v1/callbacks", headers=bearer(created["api_key"]))

    assert response.status_code == 200
    assert [c["id"] for c in response.get_json()["data"]] == [mine.get_json()["id"]]


def test_it_lists_the_tenants_keys_without_secrets_or_hashes(client, auth, other_auth, db_session):
    created = create_key(client, auth)
    create_key(client, other_auth)

    response = client.get("/v1/keys", headers=auth)

    assert response.status_code == 200
    data = response.get_json()["data"]
    assert len(data) == 2  # the tenant's first key and the new one; not the other tenant's
    # One outer transaction gives both keys the same created_at, so the order is not checked.
    assert created["id"] in {k["id"] for k in data}
    hashes = set(db_session.scalars(select(ApiKey.secret_hash)))
    for listed in data:
        assert set(listed) == KEY_KEYS
        assert listed["revoked_at"] is None
        assert not hashes & set(map(str, listed.values()))
    assert created["api_key"] not in response.get_data(as_text=True)
    assert created["api_key"].partition(".")[2] not in response.get_data(as_text=True)


def test_revoking_a_key_answers_204_and_the_next_request_with_it_is_401(client, auth):
    created = create_key(client, auth)
    assert client.get("/v1/keys", headers=bearer(created["api_key"])).status_code == 200

    response = client.delete(f"/v1/keys/{created['id']}", headers=auth)

    assert response.status_code == 204
    refused = client.get("/v1/keys", headers=bearer(created["api_key"]))
    assert refused.status_code == 401
    assert refused.get_json()["message"] == "The API key is not valid or was revoked."
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=auth).get_json()["data"]}
    assert listed[created["id"]]["revoked_at"] is not None


def test_a_tenant_may_revoke_the_key_it_is_using_when_it_has_another(client, auth):
    created = create_key(client, auth)
    own_id = next(
        k["id"]
        for k in client.get("/v1/keys", headers=auth).get_json()["data"]
        if k["id"] != created["id"]
    )

    response = client.delete(f"/v1/keys/{own_id}", headers=auth)

    assert response.status_code == 204
    assert client.get("/v1/keys", headers=auth).status_code == 401
    assert client.get("/v1/keys", headers=bearer(created["api_key"])).status_code == 200


def test_it_refuses_to_revoke_the_last_active_key(client, auth, db_session):
    (only,) = client.get("/v1/keys", headers=auth).get_json()["data"]

    response = client.delete(f"/v1/keys/{only['id']}", headers=auth)

    assert response.status_code == 409
    assert "last active API key" in response.get_json()["message"]
    assert db_session.get(ApiKey, uuid.UUID(only["id"])).revoked_at is None
    assert client.get("/v1/keys", headers=auth).status_code == 200


def test_revoking_a_revoked_key_again_changes_nothing(client, auth, db_session):
    created = create_key(client, auth)
    client.delete(f"/v1/keys/{created['id']}", headers=auth)
    first = db_session.get(ApiKey, uuid.UUID(created["id"])).revoked_at

    response = client.delete(f"/v1/keys/{created['id']}", headers=auth)

    assert response.status_code == 204
    db_session.expire_all()
    assert db_session.get(ApiKey, uuid.UUID(created["id"])).revoked_at == first


def test_another_tenants_key_is_not_found_and_stays_active(client, auth, other_auth, db_session):
    theirs = create_key(client, other_auth)

    response = client.delete(f"/v1/keys/{theirs['id']}", headers=auth)

    assert response.status_code == 404
    assert response.get_json()["message"] == "No such API key."
    assert db_session.get(ApiKey, uuid.UUID(theirs["id"])).revoked_at is None
    assert client.get("/v1/keys", headers=bearer(theirs["api_key"])).status_code == 200


def test_an_unknown_key_is_not_found(client, auth):
    response = client.delete(f"/v1/keys/{uuid.uuid4()}", headers=auth)

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"), [("post", "/v1/keys"), ("get", "/v1/keys"), ("delete", "/v1/keys/{id}")]
)
def test_every_keys_route_needs_a_valid_key(client, auth, method, path):
    created = create_key(client, auth)

    response = client.open(path.format(id=created["id"]), method=method.upper())

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_401(client, auth):
    created = create_key(client, auth)

    response = client.get("/v1/keys", headers=bearer(f"{created['prefix']}.not-the-secret"))

    assert response.status_code == 401
