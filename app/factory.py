"""Assemble the Flask app: settings, database, a send-only Celery producer, blueprints, errors."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app import portal, tracing, web
from app.announce import Announcer, install_announcer
from app.api import (
    Api,
    callbacks,
    deliveries,
    event_types,
    events,
    health,
    jobs,
    keys,
    metrics,
    portal_links,
    redirects,
    tenant,
)
from app.clock import follow_database
from app.cooldown import Cooldown
from app.db import make_engine, make_session_factory
from app.db_deadline import WARY_SECONDS, install_deadlines
from app.errors import register_error_handlers
from app.jobtypes import load_job_modules
from app.key_generation import KeyGeneration
from app.queues import Producer
from app.web import api_docs, ratelimit, request_ids, security_headers
from config.settings import Settings

API_KEY_SCHEME = "bearerAuth"


def build_app(settings: Settings | None = None, *, session_factory: Any = None) -> Flask:
    """See ``app.create_app``. Tests pass their own ``session_factory``."""
    settings = settings or Settings.from_env()
    # The API validates job types against the registry; the web never runs them.
    load_job_modules(settings.job_modules)
    tracing.configure(settings)

    app = Flask(__name__)
    # First, so that its hook opens the request's span before any other can answer instead.
    tracing.instrument_flask(app)
    # One per process: after any Redis call fails, every client here leaves Redis alone a while.
    redis_cooldown = Cooldown()
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="Boomerang",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Start slow work over HTTP; get the signed result POSTed to "
                "your callback URL."
            },
            "security": [{API_KEY_SCHEME: []}],
        },
    )

    if session_factory is None:
        # A producer only: the web sends tasks and wakes, and holds no worker resources.
        producer = Producer(settings, cooldown=redis_cooldown)
        # A frozen Postgres must cost a request a bounded wait, then a 503.
        install_deadlines(
            settings.database_connect_timeout_seconds,
            settings.statement_timeout_seconds,
            wary_seconds=WARY_SECONDS,
        )
        engine = make_engine(settings, settings.statement_timeout_seconds)
        session_factory = make_session_factory(engine, producer.sender())
        install_announcer(
            session_factory,
            Announcer(settings.redis_url, settings.redis_timeout_seconds, redis_cooldown),
        )
        # New deliveries are due "now": Postgres' now, which the workers compare against.
        follow_database(engine, settings.clock_skew_seconds)
    key_generation = KeyGeneration(
        settings.redis_url, settings.redis_timeout_seconds, redis_cooldown
    )
    web.init_app(app, web.WebContext(settings, session_factory, key_generation))
    ratelimit.init_app(app, settings, redis_cooldown)
    security_headers.init_app(app)
    api_docs.init_app(app)  # before Api(app), which reads where Swagger UI's files are
    request_ids.init_app(app)

    api = Api(app)
    api.spec.components.security_scheme(API_KEY_SCHEME, {"type": "http", "scheme": "bearer"})
    for module in (
        callbacks,
        jobs,
        events,
        event_types,
        deliveries,
        health,
        redirects,
        keys,
        portal_links,
        tenant,
    ):
        api.register_blueprint(module.blp)
    app.register_blueprint(metrics.blp)  # for Prometheus, not tenants: kept out of the OpenAPI
    portal.init_app(app, settings)  # the tenant portal's HTML pages, under /portal
    register_error_handlers(app)
    return app
