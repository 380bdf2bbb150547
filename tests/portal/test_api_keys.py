"""The portal's API keys page: create one (shown once), list them, revoke one."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.models import ApiKey
from app.services.tenants import authenticate

NEW_KEY = re.compile(r'<code class="new-key">([^<]+)</code>')


def test_it_creates_a_key_and_shows_it_once(signed_in, db_session, owner):
    response = signed_in.post("/portal/keys", page="/portal/keys")

    assert response.status_code == 201
    (new_key,) = NEW_KEY.findall(response.get_data(as_text=True))
    assert authenticate(db_session, new_key).id == owner.id
    listed = signed_in.text("/portal/keys")
    assert new_key not in listed  # shown once
    assert new_key.partition(".")[0] in listed


def test_it_revokes_a_key_and_the_next_request_with_it_is_refused(
    signed_in, client, db_session, tenant
):
    created = signed_in.post("/portal/keys", page="/portal/keys")
    (new_key,) = NEW_KEY.findall(created.get_data(as_text=True))
    key_id = db_session.scalar(select(ApiKey.id).where(ApiKey.prefix == new_key.split(".")[0]))
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200

    response = signed_in.post(f"/portal/keys/{key_id}/revoke", page="/portal/keys")

    assert response.status_code == 303
    assert "is revoked" in signed_in.text("/portal/keys")
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {new_key}"}).status_code == 401


def test_it_refuses_to_revoke_the_last_active_key_and_says_why(signed_in, db_session, tenant):
    key_id = db_session.scalar(
        select(ApiKey.id).where(ApiKey.prefix == tenant.api_key.split(".")[0])
    )

    response = signed_in.post(f"/portal/keys/{key_id}/revoke", page="/portal/keys")

    assert response.status_code == 303
    assert "last active API key" in signed_in.text("/portal/keys")
    assert db_session.get(ApiKey, key_id).revoked_at is None


def test_another_tenants_key_cannot_be_revoked(signed_in, other_tenant, db_session):
    theirs = db_session.scalar(
        select(ApiKey.id).where(ApiKey.prefix == other_tenant.api_key.split(".")[0])
    )

    response = signed_in.post(f"/portal/keys/{theirs}/revoke", page="/portal/keys")

    assert response.status_code == 404
    assert db_session.get(ApiKey, theirs).revoked_at is None
