"""Authentication, and the one JSON shape every error has: {code, status, message, errors?}."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy.exc
from sqlalchemy import select, text

from app.db_deadline import DatabaseTimeout
from app.models import ApiKey
from app.services.tenants import revoke_api_key
from app.web import db
from tests.conftest import error_fields

ANY_ID = "00000000-0000-4000-8000-000000000000"
AUTHENTICATED_ROUTES = [
    ("POST", "/v1/callbacks", {"url": "http://127.0.0.1:9/hook"}),
    ("GET", "/v1/callbacks", None),
    ("GET", f"/v1/callbacks/{ANY_ID}", None),
    ("PATCH", f"/v1/callbacks/{ANY_ID}", {"enabled": False}),
    ("DELETE", f"/v1/callbacks/{ANY_ID}", None),
    ("POST", f"/v1/callbacks/{ANY_ID}/rotate-secret", None),
    ("POST", f"/v1/callbacks/{ANY_ID}/test", None),
    ("POST", f"/v1/callbacks/{ANY_ID}/enable", None),
    ("POST", f"/v1/callbacks/{ANY_ID}/recover?since=2020-01-01T00:00:00Z", None),
    ("POST", "/v1/jobs", {"type": "echo"}),
    ("GET", "/v1/jobs", None),
    ("GET", f"/v1/jobs/{ANY_ID}", None),
    ("GET", f"/v1/jobs/{ANY_ID}/deliveries", None),
    ("GET", f"/v1/deliveries/{ANY_ID}", None),
    ("POST", f"/v1/deliveries/{ANY_ID}/retry", None),
]
BAD_AUTHORIZATION = {
    "missing": None,
    "empty": "",
    "basic-scheme": "Basic dXNlcjpwYXNz",
    "bearer-without-a-key": "Bearer ",
    "garbage": "Bearer garbage",
    "unknown-key": "Bearer bmr_000000000000.c2VjcmV0",
    "key-without-a-secret": "Bearer bmr_000000000000",
}


def assert_error_shape(response, code: int) -> dict:
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) <= {"code", "status", "message", "errors"}
    assert body["code"] == code
    assert isinstance(body["status"], str)
    assert body["status"]
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


# Authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED_ROUTES)
def test_every_api_route_needs_a_valid_api_key(client, sent_tasks, method, path, body):
    for name, value in BAD_AUTHORIZATION.items():
        headers = {} if value is None else {"Authorization": value}

        response = client.open(path, method=method, json=body, headers=headers)

        assert response.status_code == 401, (name, response.get_json())
        error = assert_error_shape(response, 401)
        assert error["status"] == "Unauthorized", name
        assert "errors" not in error, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
    assert sent_tasks == []


def test_a_valid_key_with_the_wrong_secret_is_refused(client, tenant):
    prefix, _, _ = tenant.api_key.partition(".")
    response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {prefix}.wrong"})
    assert_error_shape(response, 401)


def test_a_revoked_key_is_refused(client, auth, db_session, tenant):
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    prefix = tenant.api_key.partition(".")[0]
    key = db_session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    # Through the service, as the API, the portal and the CLI do: that tells every web process,
    # which may remember the key (app/web/key_cache.py).
    revoke_api_key(db_session, tenant.row, key.id, datetime.now(UTC), keep_one=False)

    response = client.get("/v1/jobs", headers=auth)

    assert_error_shape(response, 401)
    assert "revoked" in response.get_json()["message"]


def test_the_bearer_scheme_is_case_insensitive(client, tenant):
    response = client.get("/v1/jobs", headers={"Authorization": f"bearer {tenant.api_key}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/callbacks", {"url": "not a url"}),
        ("POST", "/v1/jobs", {"type": "no-such-type"}),
        ("GET", "/v1/jobs?limit=0", None),
        ("PATCH", f"/v1/callbacks/{ANY_ID}", {"enabled": "maybe"}),
    ],
)
def test_a_missing_key_is_a_401_even_when_the_input_is_also_wrong(client, method, path, body):
    response = client.open(path, method=method, json=body)
    body = assert_error_shape(response, 401)
    assert "errors" not in body


def test_a_malformed_body_without_a_key_is_a_401_too(client):
    response = client.post(
        "/v1/jobs", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert_error_shape(response, 401)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs"])
def test_public_routes_need_no_key(client, path):
    assert client.get(path).status_code == 200


# The error shape ---------------------------------------------------------------------------------


def test_a_validation_error_names_the_location_and_the_field(client, auth):
    response = client.post("/v1/callbacks", json={"url": "not a url", "extra": 1}, headers=auth)

    body = assert_error_shape(response, 422)
    assert body["status"] == "Unprocessable Entity"
    assert set(body["errors"]) == {"json"}
    assert set(error_fields(response)) == {"url", "extra"}
    assert all(isinstance(m, str) for messages in error_fields(response).values() for m in messages)


def test_a_malformed_json_body_is_a_400(client, auth):
    response = client.post(
        "/v1/callbacks", data='{"url": ', headers={**auth, "Content-Type": "application/json"}
    )
    body = assert_error_shape(response, 400)
    assert body["errors"] == {"json": ["Invalid JSON body."]}


def test_a_body_that_is_not_utf8_is_a_400(client, auth):
    response = client.post(
        "/v1/jobs", data=b'{"type": "\xff"}', headers={**auth, "Content-Type": "application/json"}
    )
    assert_error_shape(response, 400)


@pytest.mark.parametrize("raw", ["[1, 2]", '"a string"', "42", "null"])
def test_a_json_body_that_is_not_an_object_is_a_422(client, auth, raw):
    response = client.post(
        "/v1/jobs", data=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert_error_shape(response, 422)
    assert response.get_json()["errors"]["json"]


def test_an_empty_body_is_missing_every_required_field(client, auth):
    response = client.post(
        "/v1/callbacks", data="", headers={**auth, "Content-Type": "application/json"}
    )
    assert_error_shape(response, 422)
    assert list(error_fields(response)) == ["url"]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_an_oversized_body_is_a_json_413(client, auth, settings, sent_tasks, content_type):
    assert settings.max_request_bytes == 1024 * 1024
    raw = '{"type": "echo", "input": {"pad": "' + "x" * settings.max_request_bytes + '"}}'

    response = client.post("/v1/jobs", data=raw, headers={**auth, "Content-Type": content_type})

    body = assert_error_shape(response, 413)
    assert body["status"] == "Request Entity Too Large"
    assert sent_tasks == []


def test_a_body_just_under_the_limit_is_accepted(client, auth, settings):
    envelope = '{"type": "echo", "input": {"pad": ""}}'
    pad = "x" * (settings.max_request_bytes - len(envelope))
    raw = envelope.replace('""', f'"{pad}"')
    assert len(raw.encode()) == settings.max_request_bytes

    response = client.post(
        "/v1/jobs", data=raw, headers={**auth, "Content-Type": "application/json"}
    )

    assert response.status_code == 202


def test_an_unknown_route_is_a_json_404(client, auth):
    body = assert_error_shape(client.get("/v1/nothing-here", headers=auth), 404)
    assert body["status"] == "Not Found"
    assert "errors" not in body


def test_an_id_that_is_not_a_uuid_is_a_json_404(client, auth):
    assert_error_shape(client.get("/v1/jobs/not-a-uuid", headers=auth), 404)


def test_a_wrong_method_is_a_json_405_listing_the_allowed_ones(client, auth):
    response = client.delete("/v1/jobs", headers=auth)
    body = assert_error_shape(response, 405)
    assert body["status"] == "Method Not Allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_an_unexpected_error_is_a_500_that_leaks_nothing(app, client, caplog):
    def explode():
        raise RuntimeError("password=hunter2 at /srv/boomerang/secret.py")

    app.add_url_rule("/v1/explode", "explode", explode)

    response = client.get("/v1/explode")

    body = assert_error_shape(response, 500)
    assert body["message"] == "Internal server error."
    assert "hunter2" not in response.get_data(as_text=True)
    assert "hunter2" in caplog.text  # the operator still sees it in the log


def test_a_database_error_is_a_500_that_leaks_no_sql(app, client):
    def bad_query():
        db().execute(text("SELECT secret_column FROM no_such_table"))
        return "unreachable"

    app.add_url_rule("/v1/bad-query", "bad_query", bad_query)

    response = client.get("/v1/bad-query")

    body = assert_error_shape(response, 500)
    assert body["message"] == "Internal server error."
    assert "no_such_table" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, DatabaseTimeout("no answer in time")),
    ],
)
def test_a_database_that_does_not_answer_in_time_is_a_503_with_retry_after(app, client, error):
    def stuck():
        raise error

    app.add_url_rule("/v1/stuck", "stuck", stuck)

    response = client.get("/v1/stuck")

    body = assert_error_shape(response, 503)
    assert "database" in body["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_the_session_recovers_after_a_failed_request(app, client, auth):
    app.add_url_rule(
        "/v1/bad-query", "bad_query", lambda: db().execute(text("SELECT * FROM no_such_table"))
    )
    assert client.get("/v1/bad-query").status_code == 500

    response = client.post("/v1/jobs", json={"type": "echo"}, headers=auth)

    assert response.status_code == 202
    assert client.get(f"/v1/jobs/{response.get_json()['id']}", headers=auth).status_code == 200


def test_errors_never_answer_403_for_another_tenants_ids(client, auth, other_auth):
    theirs = client.post("/v1/jobs", json={"type": "echo"}, headers=other_auth).get_json()
    statuses = {
        client.get(f"/v1/jobs/{theirs['id']}", headers=auth).status_code,
        client.get(f"/v1/jobs/{theirs['id']}/deliveries", headers=auth).status_code,
        client.get(f"/v1/jobs/{uuid.uuid4()}", headers=auth).status_code,
    }
    assert statuses == {404}
