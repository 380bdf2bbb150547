"""Boomerang's HTTP API. ``create_app()`` is the only way to get the Flask app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from config.settings import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the Flask app. Flask is imported here, not at package import, so workers that only
    use the models and services never load it."""
    from app.factory import build_app

    return build_app(settings, **overrides)
