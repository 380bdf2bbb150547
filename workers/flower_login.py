"""Flower behind its login on every page.

Flower leaves ``/metrics`` and ``/healthcheck`` open even when a login is configured. Its
metrics name every task, worker and queue, so they are kept behind the same login as the rest;
Prometheus scrapes them with ``basic_auth`` in its scrape config.
"""

from __future__ import annotations

from tornado.web import authenticated

OPEN_VIEWS = ("Metrics", "Healthcheck")


def require_login_everywhere() -> None:
    """Make Flower's open views ask for the login; call before Flower starts."""
    from flower.views import monitor

    for name in OPEN_VIEWS:
        view = getattr(monitor, name)
        if not getattr(view.get, "__wrapped__", None):
            # With basic auth, Flower's get_current_user answers 401 to a missing or wrong login.
            view.get = authenticated(view.get)
