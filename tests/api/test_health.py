"""Liveness and readiness probes, against the real Postgres and Redis."""

from __future__ import annotations

from app import create_app


def test_healthz_answers_ok_without_an_api_key(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_answers_ok_when_postgres_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def test_readyz_answers_503_naming_the_check_that_failed(settings, db_session):
    # Nothing listens on port 1: a real connection refusal, not a mock.
    app = create_app(
        settings.replace(redis_url="redis://127.0.0.1:1/0"), session_factory=lambda: db_session
    )

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")


def test_the_probes_leave_the_database_session_usable(client, auth):
    assert client.get("/readyz").status_code == 200
    response = client.post("/v1/callbacks", json={"url": "http://127.0.0.1:9/hook"}, headers=auth)
    assert response.status_code == 201
