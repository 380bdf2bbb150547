"""Portal fixtures: a browser-like test client that signs in through the form."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.factories import make_tenant

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token_of(response: Any) -> str:
    """The CSRF token in a page's forms."""
    match = CSRF_INPUT.search(response.get_data(as_text=True))
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


class Portal:
    """Drives the portal through the test client as a browser would: every POST carries the token
    of the page it came from."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def token(self, page: str = "/portal/") -> str:
        return csrf_token_of(self.client.get(page))

    def post(self, path: str, data: dict[str, Any] | None = None, *, page: str = "/portal/"):
        return self.client.post(path, data={**(data or {}), "csrf_token": self.token(page)})

    def sign_in(self, api_key: str):
        return self.post("/portal/sign-in", {"api_key": api_key}, page="/portal/sign-in")

    def text(self, path: str) -> str:
        response = self.client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return response.get_data(as_text=True)


@pytest.fixture
def portal(client) -> Portal:
    return Portal(client)


@pytest.fixture
def signed_in(portal: Portal, tenant) -> Portal:
    response = portal.sign_in(tenant.api_key)
    assert response.status_code == 303, response.get_data(as_text=True)
    return portal


@pytest.fixture
def other_tenant(db_session):
    return make_tenant(db_session, "globex")


def add_attempt(
    session: Any,
    delivery: Any,
    *,
    status: int | None = 200,
    succeeded: bool = True,
    body: str | None = '{"ok":true}',
    duration_ms: int = 42,
    at: Any = None,
    error: str | None = None,
) -> Any:
    """Log an attempt of ``delivery`` as the delivery worker records one (signature redacted)."""
    from datetime import UTC, datetime

    from app.models import DeliveryAttempt

    attempt = DeliveryAttempt(
        delivery_id=delivery.id,
        attempted_at=at or datetime.now(UTC),
        request_headers={
            "content-type": "application/json",
            "webhook-id": f"msg_{delivery.message_id.hex}",
            "webhook-signature": "<redacted>",
        },
        response_status=status,
        response_headers={"Content-Type": "application/json", "X-Receiver": "tests"}
        if status is not None
        else None,
        response_body=body,
        duration_ms=duration_ms,
        succeeded=succeeded,
        error=error,
    )
    session.add(attempt)
    session.flush()
    return attempt
