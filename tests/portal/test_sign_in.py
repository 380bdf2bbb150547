"""Signing in with an API key, the session cookie, and signing out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from http.cookies import SimpleCookie

import pytest

from app import create_app
from app.models import Callback
from app.portal.sessions import COOKIE_NAME
from app.services.tenants import find_api_key, issue_api_key, revoke_api_key
from tests.factories import make_callback
from tests.portal.conftest import Portal, csrf_token_of

PAGES = [
    "/portal/",
    "/portal/callbacks",
    "/portal/callbacks/new",
    "/portal/jobs",
    "/portal/deliveries",
]


def session_cookie(response) -> SimpleCookie:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE_NAME)]
    cookie = SimpleCookie()
    cookie.load(header)
    return cookie


def set_cookie_header(response) -> str:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE_NAME)]
    return header


@pytest.mark.parametrize("page", PAGES)
def test_it_sends_a_visitor_who_is_not_signed_in_to_the_sign_in_page(client, page):
    response = client.get(page)

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/sign-in")


def test_it_signs_in_with_an_api_key_and_opens_the_dashboard(portal, tenant):
    response = portal.sign_in(tenant.api_key)

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/")
    page = portal.text("/portal/")
    assert "At a glance" in page
    assert tenant.row.name in page


def test_it_refuses_a_wrong_key_and_starts_no_session(portal, tenant):
    prefix = tenant.api_key.partition(".")[0]

    response = portal.sign_in(f"{prefix}.not-the-secret")

    assert response.status_code == 422
    assert "not valid or was revoked" in response.get_data(as_text=True)
    assert portal.client.get("/portal/").status_code == 303


def test_it_refuses_a_revoked_key(portal, tenant, db_session):
    spare = issue_api_key(db_session, tenant.row)
    revoke_api_key(db_session, tenant.row, spare.key.id, datetime.now(UTC))

    response = portal.sign_in(spare.api_key)

    assert response.status_code == 422


def test_revoking_the_key_signs_its_portal_sessions_out(signed_in, tenant, db_session):
    issue_api_key(db_session, tenant.row)  # the tenant keeps a key; this one goes
    signed_in_with = find_api_key(db_session, tenant.api_key)
    revoke_api_key(db_session, tenant.row, signed_in_with.id, datetime.now(UTC))

    response = signed_in.client.get("/portal/")

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/sign-in")


def test_a_sign_in_ends_after_the_session_lifetime_however_busy_the_session(signed_in, settings):
    with signed_in.client.session_transaction("/portal/") as session:
        session["signed_in_at"] -= settings.portal_session_seconds + 1

    response = signed_in.client.get("/portal/")

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/sign-in")


def test_a_sign_in_within_the_lifetime_holds(signed_in, settings):
    with signed_in.client.session_transaction("/portal/") as session:
        session["signed_in_at"] -= settings.portal_session_seconds - 60

    assert signed_in.client.get("/portal/").status_code == 200


def test_the_session_cookie_is_httponly_samesite_lax_and_kept_to_the_portal(portal, tenant):
    response = portal.sign_in(tenant.api_key)

    header = set_cookie_header(response)
    morsel = session_cookie(response)[COOKIE_NAME]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/portal"
    # Plain http on loopback: a Secure cookie would never come back.
    assert "Secure" not in header
    assert morsel["expires"]  # the sign-in lasts BOOMERANG_PORTAL_SESSION_SECONDS


def test_the_session_cookie_is_secure_when_the_browser_came_over_tls(app, tenant):
    portal = Portal(app.test_client())
    page = portal.client.get("/portal/sign-in", base_url="https://portal.example")
    response = portal.client.post(
        "/portal/sign-in",
        base_url="https://portal.example",
        data={"api_key": tenant.api_key, "csrf_token": csrf_token_of(page)},
    )

    assert response.status_code == 303
    assert "Secure" in set_cookie_header(response)


def test_the_session_cookie_is_secure_when_the_public_url_is_https(settings, db_session, tenant):
    app = create_app(
        settings.replace(public_url="https://hooks.example"), session_factory=lambda: db_session
    )
    db_session.commit()

    response = app.test_client().get("/portal/sign-in")

    assert "Secure" in set_cookie_header(response)


def test_the_cookie_holds_a_session_id_never_the_key(app, portal, tenant):
    response = portal.sign_in(tenant.api_key)

    value = session_cookie(response)[COOKIE_NAME].value
    payload = app.session_interface.get_signing_serializer(app).loads(value)
    uuid.UUID(payload["portal_session"])
    _prefix, _, secret = tenant.api_key.partition(".")
    assert secret not in value
    assert secret not in str(payload)


def test_a_cookie_copied_before_signing_out_is_worthless_after_it(app, portal, tenant, db_session):
    portal.sign_in(tenant.api_key)
    # An attacker copies the cookie, and the CSRF token the page carries.
    copied = portal.client.get_cookie(COOKIE_NAME, path="/portal").value
    token = csrf_token_of(portal.client.get("/portal/callbacks"))
    assert portal.post("/portal/sign-out").status_code == 303

    thief = app.test_client()
    thief.set_cookie(COOKIE_NAME, copied, path="/portal")
    assert thief.get("/portal/").status_code == 303  # back to the sign-in page
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    db_session.commit()
    response = thief.post(
        f"/portal/callbacks/{callback.id}/rotate-secret", data={"csrf_token": token}
    )
    assert response.status_code in (303, 400, 403)  # refused, whichever check comes first
    db_session.expire_all()
    assert db_session.get(Callback, callback.id).previous_secret is None


def test_signing_out_ends_the_session(signed_in):
    response = signed_in.post("/portal/sign-out")

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/sign-in")
    assert "You are signed out." in signed_in.text("/portal/sign-in")
    assert signed_in.client.get("/portal/").status_code == 303


def test_signing_in_again_starts_a_new_session_with_a_new_csrf_token(portal, tenant):
    before = portal.token("/portal/sign-in")

    portal.sign_in(tenant.api_key)

    assert portal.token("/portal/") != before


def test_the_sign_in_page_sends_a_signed_in_tenant_to_the_dashboard(signed_in):
    response = signed_in.client.get("/portal/sign-in")

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/")


def test_the_api_never_sets_or_reads_a_session_cookie(client, auth, signed_in):
    response = client.get("/v1/jobs", headers=auth)

    assert response.status_code == 200
    assert not response.headers.getlist("Set-Cookie")
    # The portal's cookie is no credential for the API.
    assert client.get("/v1/jobs").status_code == 401
