"""A test client of its own app instance, as a separate gunicorn worker would be: its own rate
limiter and key cache, on the test's session, committing the test's setup before each request."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from app import create_app


def web_process(settings: Any, db_session: Any, address: str | None = None) -> FlaskClient:
    class CommittingClient(FlaskClient):
        def open(self, *args: Any, **kwargs: Any):
            db_session.commit()
            return super().open(*args, **kwargs)

    app = create_app(settings, session_factory=lambda: db_session)
    app.config["TESTING"] = True
    app.test_client_class = CommittingClient
    client = app.test_client()
    if address is not None:
        client.environ_base["REMOTE_ADDR"] = address
    return client
