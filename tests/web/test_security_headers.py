"""Every answer, errors included, tells browsers and caches to be careful with it."""

from __future__ import annotations

import re
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


def test_the_docs_page_loads_swagger_ui_from_this_origin_only(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert_every_response_headers(response)
    page = response.get_data(as_text=True)
    # Every script and stylesheet is a path on this origin, and nothing runs inline.
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(source.startswith("/docs/assets/") for source in sources), sources
    assert re.search(r"<script>|<script [^>]*>[^<]", page) is None
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "default-src 'none'" in policy
    for source in sources:
        with client.get(source) as asset:
            assert asset.status_code == 200, source
            assert len(asset.get_data()) > 0


def test_the_docs_assets_serve_only_what_the_page_loads(client):
    with client.get("/docs/assets/swagger-ui/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
    for name in ("index.html", "swagger-ui-bundle.js.map", "../../../app/factory.py"):
        with client.get(f"/docs/assets/swagger-ui/{name}") as refused:
            assert refused.status_code == 404, name


def test_the_redirect_waiting_page_still_renders(client, auth):
    client.patch("/v1/tenant", json={"redirect_origins": ["http://127.0.0.1:9"]}, headers=auth)
    job = submit_job(client, auth, redirect_url="http://127.0.0.1:9/done")

    response = client.get(urlsplit(job["redirect_link"]).path)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert_every_response_headers(response)
    assert response.headers["Cache-Control"] == "no-store"
