"""Per-request plumbing: the database session and the authenticated tenant."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from celery import Celery
from flask import Flask, current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ApiError
from app.logs import add_log_context
from app.models import Tenant
from app.services.tenants import authenticate
from config.settings import Settings


@dataclass
class WebContext:
    settings: Settings
    engine: Engine | None
    session_factory: sessionmaker[Session] | Any
    celery: Celery | None


def web_context() -> WebContext:
    """This app's shared resources."""
    return current_app.extensions["boomerang"]


def settings() -> Settings:
    """The app's settings."""
    return web_context().settings


def db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = web_context().session_factory()
    return g.db_session


def init_app(app: Flask, context: WebContext) -> None:
    """Attach the context, refuse oversized bodies, and close the session when the request ends."""
    app.extensions["boomerang"] = context

    @app.before_request
    def refuse_oversized_body() -> None:
        # Werkzeug enforces MAX_CONTENT_LENGTH only when the body is read, and the JSON parser
        # reads only JSON bodies: check the declared length of every body up front.
        if (request.content_length or 0) > context.settings.max_request_bytes:
            raise RequestEntityTooLarge()

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


class Unauthorized(ApiError):
    code = 401
    # RFC 9110: a 401 names the authentication scheme the server wants.
    headers = MappingProxyType({"WWW-Authenticate": 'Bearer realm="boomerang"'})


def current_tenant() -> Tenant:
    """The tenant whose API key authorised this request, or a 401."""
    if "tenant" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send your API key as 'Authorization: Bearer <api_key>'.")
        tenant = authenticate(db(), token.strip())
        if tenant is None:
            raise Unauthorized("The API key is not valid or was revoked.")
        g.tenant = tenant
        add_log_context(tenant_id=tenant.id)
    return g.tenant


class UnsupportedMediaType(ApiError):
    code = 415


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json_mimetype(mimetype: str) -> bool:
    """``application/json`` or a structured ``+json`` type (``application/merge-patch+json``)."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def require_json_body() -> None:
    """Refuse a body that is not declared as JSON with a 415. Without this, webargs would ignore
    such a body and answer as if none had been sent (a 422, or a success with defaults)."""
    has_body = (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )
    if request.method in BODY_METHODS and has_body and not is_json_mimetype(request.mimetype):
        sent = request.mimetype or "no Content-Type"
        raise UnsupportedMediaType(
            f"Send the body as 'Content-Type: application/json' (got {sent})."
        )


def require_tenant() -> None:
    """A blueprint's ``before_request``: authenticate before the body is parsed, so a caller
    without a valid key gets a 401 and never a validation error; then refuse a body that is not
    JSON. Every /v1 blueprint registers this, so every /v1 route gets both."""
    current_tenant()
    require_json_body()
