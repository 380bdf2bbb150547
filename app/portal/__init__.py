"""The tenant portal at /portal: server-rendered pages over the same services as the API."""

from __future__ import annotations

from flask import Flask

from config.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Register the portal and its cookie session on ``app``."""
    # The views register themselves on the blueprint when imported.
    from app.errors import ERROR_PAGES
    from app.portal import (  # noqa: F401 (importing registers their routes)
        account,
        api_keys,
        callbacks,
        dashboard,
        deliveries,
        event_types,
        jobs,
        sessions,
        settings_page,
    )
    from app.portal.blueprint import bp, portal_error_page

    sessions.init_app(app, settings)
    app.register_blueprint(bp)
    app.extensions[ERROR_PAGES] = portal_error_page
