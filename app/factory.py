"""Assemble the Flask app: settings, database, Celery producer, API blueprints, errors."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app import portal, ratelimit, request_ids, security_headers, web
from app.api import Api, callbacks, deliveries, health, jobs, keys, metrics, redirects
from app.db import make_engine, make_session_factory
from app.errors import register_error_handlers
from config.settings import Settings
from workers.jobs import load_job_modules

API_KEY_SCHEME = "bearerAuth"


def build_app(
    settings: Settings | None = None, *, session_factory: Any = None, celery: Any = None
) -> Flask:
    """See ``app.create_app``. Tests pass their own ``session_factory``."""
    settings = settings or Settings.from_env()
    load_job_modules(settings.job_modules)

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="Boomerang",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Start slow work over HTTP; get the signed result POSTed to "
                "your callback URL."
            },
            "security": [{API_KEY_SCHEME: []}],
        },
    )

    engine = None
    if session_factory is None:
        from workers.celery_app import create_celery, task_sender

        celery = celery or create_celery(settings)
        engine = make_engine(settings)
        session_factory = make_session_factory(engine, task_sender(celery))
    web.init_app(app, web.WebContext(settings, engine, session_factory, celery))
    ratelimit.init_app(app, settings)
    security_headers.init_app(app)
    request_ids.init_app(app)

    api = Api(app)
    api.spec.components.security_scheme(API_KEY_SCHEME, {"type": "http", "scheme": "bearer"})
    for module in (callbacks, jobs, deliveries, health, redirects, keys):
        api.register_blueprint(module.blp)
    app.register_blueprint(metrics.blp)  # for Prometheus, not tenants: kept out of the OpenAPI
    portal.init_app(app, settings)  # the tenant portal's HTML pages, under /portal
    register_error_handlers(app)
    return app
