"""Portal links: a tenant's backend mints a one-time, expiring sign-in URL (``POST
/v1/portal/links``); the person who opens it is signed in to that tenant only, read-only if the
link says so, and a used, expired or revoked link gets a clear page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.models import Callback, PortalLink, PortalSession
from app.services.tenants import find_api_key, issue_api_key, revoke_api_key
from tests.conftest import error_fields
from tests.factories import make_callback
from tests.portal.conftest import Portal, csrf_token_of


def mint(client, auth, **body):
    response = client.post("/v1/portal/links", json=body, headers=auth)
    assert response.status_code == 201, response.json
    return response.json


def path_of(url: str) -> str:
    return url[url.index("/portal/link/") :]


def open_link(portal: Portal, url: str):
    """As a person does: open the page, then press Continue."""
    page = portal.client.get(path_of(url))
    if page.status_code != 200:
        return page
    return portal.client.post(path_of(url), data={"csrf_token": csrf_token_of(page)})


def test_a_minted_link_signs_its_holder_in_to_that_tenant(client, auth, portal, owner, settings):
    link = mint(client, auth)

    assert link["url"].startswith(f"{settings.public_url}/portal/link/")
    assert link["read_only"] is False
    page = portal.client.get(path_of(link["url"]))
    assert page.status_code == 200
    assert owner.name in page.get_data(as_text=True)
    assert portal.client.get("/portal/").status_code == 303  # the page alone signs no one in

    response = open_link(portal, link["url"])

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/")
    assert owner.name in portal.text("/portal/")


def test_a_link_works_once(client, auth, portal, db_session):
    link = mint(client, auth)
    assert open_link(portal, link["url"]).status_code == 303

    again = open_link(Portal(client.application.test_client()), link["url"])

    assert again.status_code == 410
    assert "already used" in again.get_data(as_text=True)
    assert len(db_session.scalars(select(PortalSession.id)).all()) == 1


def test_an_expired_link_gets_a_clear_page(client, auth, portal, db_session):
    link = mint(client, auth, expires_in=60)
    db_session.execute(
        update(PortalLink).values(expires_at=PortalLink.expires_at - timedelta(minutes=2))
    )

    response = open_link(portal, link["url"])

    assert response.status_code == 410
    assert "expired" in response.get_data(as_text=True)
    assert portal.client.get("/portal/").status_code == 303


def test_a_made_up_link_is_not_found(portal):
    response = portal.client.get("/portal/link/not-a-real-token")

    assert response.status_code == 404
    assert "not valid" in response.get_data(as_text=True)
    assert response.mimetype == "text/html"


def test_revoking_the_key_that_minted_a_link_ends_the_link_and_its_session(
    client, auth, portal, tenant, owner, db_session
):
    spare = issue_api_key(db_session, owner)  # the tenant's last key cannot be revoked
    spare_auth = {"Authorization": f"Bearer {spare.api_key}"}
    unused = mint(client, spare_auth)
    used = mint(client, spare_auth)
    assert open_link(portal, used["url"]).status_code == 303

    revoke_api_key(
        db_session, owner, spare.key.id, db_session.scalar(select(PortalLink.created_at))
    )

    assert portal.client.get("/portal/").status_code == 303  # signed out
    response = open_link(Portal(client.application.test_client()), unused["url"])
    assert response.status_code == 410
    assert "revoked" in response.get_data(as_text=True)
    assert find_api_key(db_session, tenant.api_key).revoked_at is None


def test_a_read_only_link_shows_everything_and_changes_nothing(
    client, auth, portal, owner, db_session
):
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/ro")
    db_session.commit()  # a refused request rolls back what it was given
    link = mint(client, auth, read_only=True)
    assert link["read_only"] is True
    open_link(portal, link["url"])

    page = portal.text(f"/portal/callbacks/{callback.id}")
    assert "read-only" in page
    token = csrf_token_of(client.get("/portal/"))  # the sign-out form still carries one
    refused = client.post(f"/portal/callbacks/{callback.id}/disable", data={"csrf_token": token})

    assert refused.status_code == 403
    assert "read-only" in refused.get_data(as_text=True)
    assert db_session.scalar(select(Callback.enabled).where(Callback.id == callback.id)) is True
    assert client.post("/portal/sign-out", data={"csrf_token": token}).status_code == 303


def test_a_session_from_a_link_cannot_manage_api_keys(client, auth, portal):
    open_link(portal, mint(client, auth)["url"])

    assert "API keys" not in portal.text("/portal/")
    assert client.get("/portal/keys").status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 3601}, "expires_in"),
        ({"read_only": "perhaps"}, "read_only"),
        ({"tenant_id": "someone-else"}, "tenant_id"),
    ],
)
def test_a_bad_link_request_is_a_422_naming_the_field(client, auth, db_session, body, field):
    response = client.post("/v1/portal/links", json=body, headers=auth)

    assert response.status_code == 422
    assert field in error_fields(response)
    assert db_session.scalar(select(PortalLink.id)) is None


def test_a_link_needs_an_api_key(client):
    assert client.post("/v1/portal/links", json={}).status_code == 401


def test_only_a_hash_of_the_token_is_stored(client, auth, db_session):
    link = mint(client, auth)
    token = link["url"].rsplit("/", 1)[1]

    stored = db_session.scalar(select(PortalLink))
    assert token not in stored.token_hash
    assert len(stored.token_hash) == 64
