"""Redirect links: the browser waits on /r/<token>, then returns to the client's signed URL."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.models import Job
from app.signing import sign_redirect
from tests.api.conftest import run_job, submit_job
from tests.conftest import error_fields

SITE = "http://127.0.0.1:9"
RETURN_URL = f"{SITE}/done?order=42&lang=en"


@pytest.fixture
def site(client, auth):
    """SITE listed as one of the tenant's redirect origins."""
    response = client.patch("/v1/tenant", json={"redirect_origins": [SITE]}, headers=auth)
    assert response.status_code == 200, response.get_json()


def token_of(job) -> str:
    return urlsplit(job["redirect_link"]).path.removeprefix("/r/")


# Submitting a job with a redirect_url ------------------------------------------------------------


def test_a_redirect_url_on_a_registered_origin_gets_a_redirect_link(client, auth, settings, site):
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": RETURN_URL}, headers=auth
    )

    assert response.status_code == 202
    body = response.get_json()
    assert body["redirect_url"] == RETURN_URL
    link = body["redirect_link"]
    assert link.startswith(f"{settings.public_url}/r/")
    assert len(token_of(body)) >= 32
    polled = client.get(f"/v1/jobs/{body['id']}", headers=auth).get_json()
    assert "redirect_link" not in polled


def test_every_job_gets_its_own_redirect_token(client, auth, site):
    first = submit_job(client, auth, redirect_url=RETURN_URL)
    second = submit_job(client, auth, redirect_url=RETURN_URL)
    assert token_of(first) != token_of(second)


@pytest.mark.parametrize(
    "redirect_url",
    [
        "http://127.0.0.1:10/done",  # another port
        "https://127.0.0.1:9/done",  # another scheme
        "http://evil.example/done",  # another host
        "http://127.0.0.1:9@evil.example/done",
    ],
)
def test_a_redirect_url_on_an_unregistered_origin_is_refused(
    client, auth, site, sent_tasks, redirect_url
):
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": redirect_url}, headers=auth
    )

    assert response.status_code == 422
    assert list(error_fields(response)) == ["redirect_url"]
    assert sent_tasks == []


def test_a_redirect_url_needs_a_registered_callback_at_all(client, auth):
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": RETURN_URL}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["redirect_url"]


def test_another_tenants_callback_does_not_vouch_for_an_origin(client, auth, other_auth):
    client.post("/v1/callbacks", json={"url": f"{SITE}/hook"}, headers=other_auth)
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": RETURN_URL}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["redirect_url"]


@pytest.mark.parametrize("redirect_url", ["not a url", "javascript:alert(1)", "ftp://x"])
def test_a_redirect_url_that_is_not_http_is_refused(client, auth, site, redirect_url):
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": redirect_url}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["redirect_url"]


# Following the link ------------------------------------------------------------------------------


def test_while_the_job_is_queued_the_link_shows_a_refreshing_page(client, auth, site):
    job = submit_job(client, auth, redirect_url=RETURN_URL)

    response = client.get(f"/r/{token_of(job)}")  # no API key: the token is the credential

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "queued" in page
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Location" not in response.headers


def test_the_waiting_page_shows_progress(client, auth, db_session, site):
    job = submit_job(client, auth, redirect_url=RETURN_URL)
    stored = db_session.get(Job, uuid.UUID(job["id"]))
    stored.progress = {"percent": 40.0, "message": "resizing"}

    page = client.get(f"/r/{token_of(job)}").get_data(as_text=True)

    assert 'value="40.0"' in page
    assert "resizing" in page


@pytest.mark.parametrize(("job_type", "status"), [("echo", "succeeded"), ("fail", "failed")])
def test_after_the_job_ends_the_link_redirects_to_the_signed_return_url(
    client, auth, db_session, settings, owner, site, job_type, status
):
    job = submit_job(client, auth, type=job_type, redirect_url=RETURN_URL)
    run_job(db_session, settings, job["id"])

    response = client.get(f"/r/{token_of(job)}")

    assert response.status_code == 303
    target = urlsplit(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{SITE}/done"
    assert parse_qsl(target.query) == [
        ("order", "42"),
        ("lang", "en"),
        ("job_id", job["id"]),
        ("status", status),
        ("signature", sign_redirect(owner.signing_secret, job["id"], status)),
    ]
    assert response.headers["Cache-Control"] == "no-store"


def test_the_return_url_cannot_carry_a_forged_status(
    client, auth, db_session, settings, owner, site
):
    forged = f"{SITE}/done?status=succeeded&signature=forged&job_id=x"
    job = submit_job(client, auth, type="fail", redirect_url=forged)
    run_job(db_session, settings, job["id"])

    target = urlsplit(client.get(f"/r/{token_of(job)}").headers["Location"])

    assert parse_qsl(target.query) == [
        ("job_id", job["id"]),
        ("status", "failed"),
        ("signature", sign_redirect(owner.signing_secret, job["id"], "failed")),
    ]


def test_the_signature_is_the_tenants_and_not_anyone_elses(
    client, auth, db_session, settings, owner, site
):
    job = submit_job(client, auth, redirect_url=RETURN_URL)
    run_job(db_session, settings, job["id"])

    query = dict(parse_qsl(urlsplit(client.get(f"/r/{token_of(job)}").headers["Location"]).query))

    assert query["signature"] != sign_redirect(owner.signing_secret, job["id"], "failed")
    assert query["signature"] != sign_redirect("whsec_" + "A" * 32, job["id"], "succeeded")


@pytest.mark.parametrize(
    "token",
    ["unknown-token", "x" * 65, "abc%00def", "a.b", "a b"],
)
def test_an_unknown_token_is_a_json_404(client, token):
    response = client.get(f"/r/{token}")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["message"] == "No such link."


def test_a_job_without_a_redirect_url_has_no_link(client, auth):
    job = submit_job(client, auth)
    assert job["redirect_link"] is None


# Which origins: the tenant's own list ----------------------------------------------------------


def test_a_registered_callback_no_longer_makes_its_origin_a_redirect_target(client, auth):
    # Anyone can register any URL as a callback: it proves nothing about who owns the site.
    assert (
        client.post("/v1/callbacks", json={"url": f"{SITE}/hook"}, headers=auth).status_code == 201
    )
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": RETURN_URL}, headers=auth
    )
    assert response.status_code == 422
    assert "redirect origins" in error_fields(response)["redirect_url"][0]


def test_the_tenant_lists_its_redirect_origins_normalised(client, auth):
    response = client.patch(
        "/v1/tenant",
        json={"redirect_origins": ["https://Shop.Example", "http://127.0.0.1:9/", SITE]},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.get_json()["redirect_origins"] == ["https://shop.example", SITE]
    assert client.get("/v1/tenant", headers=auth).get_json()["redirect_origins"] == [
        "https://shop.example",
        SITE,
    ]


@pytest.mark.parametrize(
    "origin",
    [
        "https://shop.example/return",  # a path: an origin has none
        "https://shop.example?x=1",
        "ftp://shop.example",
        "https://user@shop.example",
        "https://",
        "shop.example",
    ],
)
def test_what_is_not_an_origin_is_refused_naming_the_field(client, auth, origin):
    response = client.patch("/v1/tenant", json={"redirect_origins": [origin]}, headers=auth)
    assert response.status_code == 422
    assert "redirect_origins" in error_fields(response)


def test_another_tenants_redirect_origins_do_not_apply(client, auth, other_auth, site):
    response = client.post(
        "/v1/jobs", json={"type": "echo", "redirect_url": RETURN_URL}, headers=other_auth
    )
    assert response.status_code == 422


def test_removing_an_origin_stops_the_links_already_given_out(
    client, auth, db_session, settings, site
):
    job = submit_job(client, auth, redirect_url=RETURN_URL)
    run_job(db_session, settings, job["id"])
    assert client.get(f"/r/{token_of(job)}").status_code == 303

    client.patch("/v1/tenant", json={"redirect_origins": []}, headers=auth)

    response = client.get(f"/r/{token_of(job)}")
    assert response.status_code == 404
    assert "Location" not in response.headers


def test_cors_origins_are_set_apart_and_do_not_make_a_redirect_target(client, auth):
    response = client.patch(
        "/v1/tenant", json={"cors_origins": ["https://App.Example/"]}, headers=auth
    )
    assert response.status_code == 200
    assert response.get_json()["cors_origins"] == ["https://app.example"]
    assert response.get_json()["redirect_origins"] == []

    refused = client.post(
        "/v1/jobs",
        json={"type": "echo", "redirect_url": "https://app.example/done"},
        headers=auth,
    )
    assert refused.status_code == 422
    assert "redirect_url" in error_fields(refused)
