"""What every portal page is made of: its headers, its static files, nothing inline, a phone-width
viewport."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from app import create_app
from tests.factories import make_callback

PAGES = [
    "/portal/",
    "/portal/callbacks",
    "/portal/callbacks/new",
    "/portal/jobs",
    "/portal/deliveries",
]


@pytest.mark.parametrize("page", [*PAGES, "/portal/sign-in"])
def test_every_page_is_uncacheable_framed_by_nobody_and_loads_only_its_own_files(signed_in, page):
    response = signed_in.client.get(page, follow_redirects=True)

    assert response.status_code == 200
    headers = response.headers
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    html = response.get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    # The policy refuses inline code, so none may be there to break.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert " style=" not in html
    assert "<style" not in html


def test_the_callback_page_has_nothing_inline_either(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")

    html = signed_in.text(f"/portal/callbacks/{callback.id}")

    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert " style=" not in html and " onclick=" not in html


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/portal/static/portal/portal.css", "text/css"),
        ("/portal/static/portal/portal.js", "text/javascript"),
    ],
)
def test_the_static_files_are_served_from_the_package_without_a_session(client, path, content_type):
    response = client.get(path)
    response.close()  # a file response holds the file open until closed

    assert response.status_code == 200
    assert response.mimetype == content_type
    assert "no-store" not in response.headers.get("Cache-Control", "")
    assert not response.headers.getlist("Set-Cookie")


def test_the_api_keeps_its_own_headers(client, auth):
    response = client.get("/v1/jobs", headers=auth)

    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; frame-ancestors 'none'"
    )


def test_the_settings_page_lists_and_changes_the_redirect_origins(signed_in, db_session, tenant):
    from app.models import Tenant

    response = signed_in.post(
        "/portal/settings",
        {"redirect_origins": "https://Shop.Example\n\nhttp://127.0.0.1:9"},
        page="/portal/settings",
    )
    assert response.status_code == 303
    db_session.expire_all()
    stored = db_session.get(Tenant, tenant.row.id).redirect_origins
    assert stored == ["https://shop.example", "http://127.0.0.1:9"]
    assert "https://shop.example" in signed_in.text("/portal/settings")


def test_the_settings_page_refuses_what_the_api_refuses(signed_in):
    response = signed_in.post(
        "/portal/settings",
        {"redirect_origins": "https://shop.example/return"},
        page="/portal/settings",
    )
    assert response.status_code == 422
    assert "is not an origin" in response.get_data(as_text=True)


def test_the_settings_page_keeps_the_stream_origins_apart_from_the_redirect_ones(
    signed_in, db_session, tenant
):
    from app.models import Tenant

    response = signed_in.post(
        "/portal/settings",
        {"redirect_origins": "https://shop.example", "cors_origins": "https://App.Example"},
        page="/portal/settings",
    )

    assert response.status_code == 303
    db_session.expire_all()
    stored = db_session.get(Tenant, tenant.row.id)
    assert stored.redirect_origins == ["https://shop.example"]
    assert stored.cors_origins == ["https://app.example"]
    page = signed_in.text("/portal/settings")
    assert "Stream origins" in page and "https://app.example" in page


def test_a_malformed_id_in_a_portal_url_is_an_html_page_not_the_apis_json(signed_in):
    response = signed_in.client.get("/portal/callbacks/not-a-uuid")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Not found" in response.get_data(as_text=True)
    assert signed_in.client.get("/v1/callbacks/not-a-uuid").mimetype == "application/json"


@pytest.mark.parametrize("secret_key", ["", "a-configured-session-key-of-32-characters-or-more"])
def test_a_database_outage_is_an_html_page_in_the_portal(settings, secret_key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    broken = settings.replace(
        database_url=f"postgresql://postgres@127.0.0.1:{closed}/boomerang", secret_key=secret_key
    )
    client = create_app(broken).test_client()
    if secret_key:  # a signed-in browser: the session's row is what cannot be read
        with client.session_transaction("/portal/") as session:
            session["portal_session"] = str(uuid.uuid4())
            session["signed_in_at"] = int(time.time())

    # Signed in, a page; signed out, the sign-in page (which needs the session key first).
    response = client.get("/portal/callbacks" if secret_key else "/portal/sign-in")

    assert response.status_code == 503
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "database is unavailable" in page or "unavailable" in page
    assert "Traceback" not in page
