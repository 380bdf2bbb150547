"""API keys a web process remembers: a remembered key's requests skip the Postgres lookup, and a
change made through any process (a revoked key, new tenant settings) is seen at once by every
other, because the rate limit's Redis call reads the generation such changes bump."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlalchemy import event

from tests.factories import make_api_key, make_tenant
from tests.support.web_process import web_process


@pytest.fixture
def lookups(engine):
    """How many times Postgres was asked for an API key."""
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    yield lambda: sum("boomerang_authenticate" in statement for statement in statements)
    event.remove(engine, "before_cursor_execute", seen)


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def test_a_remembered_key_asks_postgres_once(settings, db_session, lookups):
    web = web_process(settings, db_session)
    tenant = make_tenant(db_session, "acme")

    for _ in range(3):
        assert web.get("/v1/jobs", headers=bearer(tenant.api_key)).status_code == 200

    assert lookups() == 1


def test_with_the_cache_off_every_request_asks(settings, db_session, lookups):
    web = web_process(settings.replace(api_key_cache_seconds=0), db_session)
    tenant = make_tenant(db_session, "acme")

    for _ in range(3):
        assert web.get("/v1/jobs", headers=bearer(tenant.api_key)).status_code == 200

    assert lookups() == 3


def test_a_key_revoked_through_one_process_is_refused_at_once_by_another(settings, db_session):
    one, other = web_process(settings, db_session), web_process(settings, db_session)
    tenant = make_tenant(db_session, "acme")
    spare = make_api_key(db_session, tenant.row)
    assert other.get("/v1/jobs", headers=bearer(tenant.api_key)).status_code == 200  # remembered
    key_id = next(
        key["id"]
        for key in one.get("/v1/keys", headers=bearer(spare)).get_json()["data"]
        if tenant.api_key.startswith(key["prefix"] + ".")
    )

    assert one.delete(f"/v1/keys/{key_id}", headers=bearer(spare)).status_code == 204

    assert other.get("/v1/jobs", headers=bearer(tenant.api_key)).status_code == 401
    assert other.get("/v1/jobs", headers=bearer(spare)).status_code == 200


def test_settings_changed_through_one_process_are_seen_at_once_by_another(settings, db_session):
    one, other = web_process(settings, db_session), web_process(settings, db_session)
    tenant = make_tenant(db_session, "acme")
    assert other.get("/v1/tenant", headers=bearer(tenant.api_key)).get_json()["cors_origins"] == []

    changed = one.patch(
        "/v1/tenant", json={"cors_origins": ["https://app.example"]}, headers=bearer(tenant.api_key)
    )

    assert changed.status_code == 200
    seen = other.get("/v1/tenant", headers=bearer(tenant.api_key)).get_json()
    assert seen["cors_origins"] == ["https://app.example"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_redis_nothing_is_remembered(settings, db_session, lookups):
    web = web_process(
        settings.replace(redis_url=f"redis://127.0.0.1:{closed_port()}/0"), db_session
    )
    tenant = make_tenant(db_session, "acme")

    for _ in range(3):
        assert web.get("/v1/jobs", headers=bearer(tenant.api_key)).status_code == 200

    # No generation to check a remembered key against: Postgres decides every time.
    assert lookups() == 3
