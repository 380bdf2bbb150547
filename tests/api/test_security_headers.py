"""Every answer, errors included, tells browsers and caches to be careful with it."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from app.web import db
from tests.api.conftest import submit_job

EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ANY_ID = "00000000-0000-4000-8000-000000000000"


def assert_every_response_headers(response) -> None:
    for name, value in EVERY_RESPONSE.items():
        assert response.headers.get(name) == value, (name, response.status_code)


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status"),
    [
        ("GET", "/v1/jobs", {}, 200),
        ("POST", "/v1/jobs", {"json": {"type": "echo"}}, 202),
        ("GET", f"/v1/jobs/{ANY_ID}", {}, 404),
        ("GET", "/v1/jobs?limit=0", {}, 422),
        ("DELETE", "/v1/jobs", {}, 405),
        ("GET", "/v1/nothing-here", {}, 404),
        ("POST", "/v1/callbacks", {"data": {"url": "http://127.0.0.1:9/hook"}}, 415),
    ],
)
def test_every_api_answer_is_uncacheable_and_inert(
    client, auth, method, path, request_kwargs, status
):
    response = client.open(path, method=method, headers=auth, **request_kwargs)

    assert response.status_code == status
    assert_every_response_headers(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert (
        response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    )


def test_a_401_carries_the_headers_too(client):
    response = client.get("/v1/jobs")

    assert response.status_code == 401
    assert_every_response_headers(response)
    assert response.headers["Cache-Control"] == "no-store"


def test_a_500_carries_the_headers_too(app, client, auth):
    @app.get("/v1/boom")
    def boom():
        db()
        raise RuntimeError("boom")

    response = client.get("/v1/boom", headers=auth)

    assert response.status_code == 500
    assert_every_response_headers(response)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/r/unknown", "/nowhere"])
def test_public_routes_carry_the_headers(client, path):
    response = client.get(path)

    assert_every_response_headers(response)


def test_the_docs_page_keeps_loading_swagger_ui_from_its_cdn(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert_every_response_headers(response)
    # A policy of default-src 'none' would block the CDN's scripts and styles.
    assert "Content-Security-Policy" not in response.headers
    assert "cdn.jsdelivr.net" in response.get_data(as_text=True)


def test_the_redirect_waiting_page_still_renders(client, auth):
    client.post("/v1/callbacks", json={"url": "http://127.0.0.1:9/hook"}, headers=auth)
    job = submit_job(client, auth, redirect_url="http://127.0.0.1:9/done")

    response = client.get(urlsplit(job["redirect_link"]).path)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert_every_response_headers(response)
    assert response.headers["Cache-Control"] == "no-store"
