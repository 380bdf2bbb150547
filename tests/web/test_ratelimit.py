"""Per-tenant rate limits, counted in the real Redis so every worker and host shares them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient

from app.web.ratelimit import KEY_PREFIX
from tests.factories import make_tenant
from tests.support.web_process import web_process

LIMIT = "3 per minute"


@pytest.fixture
def limited(settings):
    """Settings with a limit small enough to reach in a test."""
    return settings.replace(rate_limit=LIMIT)


def random_address() -> str:
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@pytest.fixture
def address() -> str:
    """A client address no other test uses, so its count starts at zero."""
    return random_address()


@pytest.fixture
def counters(settings) -> Iterator[list[str]]:
    """Names (tenant ids, addresses) whose Redis counters are deleted after the test, and only
    those: other tests share the database."""
    names: list[str] = []
    yield names
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for name in names:
            for key in client.scan_iter(match=f"*{KEY_PREFIX}*{name}*"):
                client.delete(key)
    finally:
        client.close()


def client_for(settings, db_session, address: str) -> FlaskClient:
    """A client of a new app instance, seen as coming from ``address``."""
    return web_process(settings, db_session, address)


def new_tenant(db_session, counters: list[str], name: str) -> dict[str, str]:
    tenant, api_key = make_tenant(db_session, name)
    counters.append(str(tenant.id))
    return {"Authorization": f"Bearer {api_key}"}


def assert_rate_limited(response) -> int:
    assert response.status_code == 429
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"code", "status", "message"}
    assert body["code"] == 429
    assert body["status"] == "Too Many Requests"
    assert "3 per 1 minute" in body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_the_fourth_request_in_a_minute_is_a_429_with_retry_after(
    limited, db_session, counters, address
):
    client = client_for(limited, db_session, address)
    auth = new_tenant(db_session, counters, "acme")

    # One budget across every route, whatever the answer.
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert client.get("/v1/callbacks", headers=auth).status_code == 200
    assert client.post("/v1/jobs", json={"type": "nope"}, headers=auth).status_code == 422
    response = client.get("/v1/jobs", headers=auth)

    retry_after = assert_rate_limited(response)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert retry_after > 0


def test_a_refused_request_does_nothing(limited, db_session, counters, address, sent_tasks):
    client = client_for(limited, db_session, address)
    auth = new_tenant(db_session, counters, "acme")
    for _ in range(3):
        assert client.get("/v1/jobs", headers=auth).status_code == 200

    response = client.post("/v1/jobs", json={"type": "echo"}, headers=auth)

    assert_rate_limited(response)
    assert sent_tasks == []
    assert client.get("/v1/jobs", headers=auth).status_code == 429


def test_another_tenant_is_not_slowed_by_a_limited_one(limited, db_session, counters, address):
    client = client_for(limited, db_session, address)
    acme = new_tenant(db_session, counters, "acme")
    globex = new_tenant(db_session, counters, "globex")
    for _ in range(3):
        assert client.get("/v1/jobs", headers=acme).status_code == 200
    assert_rate_limited(client.get("/v1/jobs", headers=acme))

    for _ in range(3):
        assert client.get("/v1/jobs", headers=globex).status_code == 200
    assert_rate_limited(client.get("/v1/jobs", headers=globex))


def test_two_app_instances_share_one_count(limited, db_session, counters, address):
    first = client_for(limited, db_session, address)
    second = client_for(limited, db_session, address)
    assert first.application is not second.application
    auth = new_tenant(db_session, counters, "acme")

    assert first.get("/v1/jobs", headers=auth).status_code == 200
    assert second.get("/v1/jobs", headers=auth).status_code == 200
    assert first.get("/v1/jobs", headers=auth).status_code == 200

    assert_rate_limited(second.get("/v1/jobs", headers=auth))
    assert_rate_limited(first.get("/v1/jobs", headers=auth))


def test_all_keys_of_a_tenant_share_its_budget(limited, db_session, counters, address):
    from tests.factories import make_api_key

    client = client_for(limited, db_session, address)
    tenant, first_key = make_tenant(db_session, "acme")
    counters.append(str(tenant.id))
    second_key = make_api_key(db_session, tenant)

    for key in (first_key, second_key, first_key):
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    assert_rate_limited(client.get("/v1/jobs", headers={"Authorization": f"Bearer {second_key}"}))


def test_requests_without_a_valid_key_are_counted_by_address(
    limited, db_session, counters, address
):
    client = client_for(limited, db_session, address)
    counters.append(address)
    for _ in range(3):
        assert client.get("/v1/jobs").status_code == 401

    assert_rate_limited(client.get("/v1/jobs"))
    other_address = random_address()
    counters.append(other_address)
    assert client_for(limited, db_session, other_address).get("/v1/jobs").status_code == 401


def test_a_made_up_secret_cannot_spend_a_tenants_budget(limited, db_session, counters, address):
    client = client_for(limited, db_session, address)
    counters.append(address)
    auth = new_tenant(db_session, counters, "acme")
    prefix = auth["Authorization"].removeprefix("Bearer ").partition(".")[0]

    for _ in range(4):
        client.get("/v1/jobs", headers={"Authorization": f"Bearer {prefix}.forged"})

    assert client.get("/v1/jobs", headers=auth).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/r/unknown"])
def test_probes_docs_and_links_are_not_limited(limited, db_session, counters, address, path):
    client = client_for(limited, db_session, address)
    counters.append(address)

    statuses = {client.get(path).status_code for _ in range(6)}

    assert 429 not in statuses


def test_the_api_keeps_answering_when_redis_is_down(limited, db_session, counters, address):
    # Port 1 refuses connections at once: the limiter falls back to counting in memory.
    down = limited.replace(redis_url="redis://127.0.0.1:1/0")
    client = client_for(down, db_session, address)
    auth = new_tenant(db_session, counters, "acme")

    for _ in range(3):
        assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert_rate_limited(client.get("/v1/jobs", headers=auth))
