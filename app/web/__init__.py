"""Per-request plumbing: the database session and the authenticated tenant."""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from flask import Flask, current_app, g, request
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import RequestEntityTooLarge

from app.db_deadline import end_request_deadline, start_request_deadline
from app.errors import ApiError
from app.key_generation import KeyGeneration, attach_key_generation
from app.logs import add_log_context
from app.models import Tenant
from app.services.tenants import authenticate
from app.stream_tokens import StreamTokens
from config.settings import Settings


@dataclass
class WebContext:
    settings: Settings
    session_factory: sessionmaker[Session] | Any
    # Told of every change to what API keys let in, for the key cache of every web process.
    key_generation: KeyGeneration | None = None


def web_context() -> WebContext:
    """This app's shared resources."""
    return current_app.extensions["boomerang"]


def settings() -> Settings:
    """The app's settings."""
    return web_context().settings


def db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        context = web_context()
        g.db_session = context.session_factory()
        attach_key_generation(g.db_session, context.key_generation)
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
        if request.content_length is None and is_chunked(request.headers):
            buffer_chunked_body(request.environ, context.settings.max_request_bytes)

    @app.before_request
    def start_database_deadline() -> None:
        # However many statements, reconnects and pings the request makes, it waits on
        # Postgres this long in all; a frozen server then gets the request a 503, not a hang.
        g.database_deadline = start_request_deadline(context.settings.request_database_seconds)

    # Flask runs app-context teardowns last registered first: this one runs after the session
    # below is closed, so that closing is bounded by the deadline too.
    @app.teardown_appcontext
    def end_database_deadline(_exc: BaseException | None) -> None:
        token = g.pop("database_deadline", None)
        if token is not None:
            end_request_deadline(token)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


class Unauthorized(ApiError):
    code = 401
    # RFC 9110: a 401 names the authentication scheme the server wants.
    headers = MappingProxyType({"WWW-Authenticate": 'Bearer realm="boomerang"'})


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send your API key as 'Authorization: Bearer <api_key>'.")
    return token.strip()


def current_api_key_prefix() -> str:
    """The public prefix of the API key this request was made with (after it authenticated)."""
    current_tenant()
    return _bearer_token().partition(".")[0]


def current_tenant() -> Tenant:
    """The tenant whose API key authorised this request, or a 401."""
    if "tenant" not in g:
        tenant = authenticate(db(), _bearer_token())
        if tenant is None:
            raise Unauthorized("The API key is not valid or was revoked.")
        set_current_tenant(tenant)
    return g.tenant


def set_current_tenant(tenant: Tenant) -> None:
    """This request is ``tenant``'s (its API key was checked, here or by the key cache)."""
    g.tenant = tenant
    add_log_context(tenant_id=tenant.id)


def bearer_token_or_none() -> str | None:
    """The request's API key as sent, or None when it sent none in a usable shape."""
    try:
        return _bearer_token()
    except Unauthorized:
        return None


class UnsupportedMediaType(ApiError):
    code = 415


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Every tenant-facing JSON route lives under this prefix; the portal, probes and /metrics do not.
API_PREFIX = "/v1"


def stream_tokens() -> StreamTokens:
    """This app's stream-token maker (its key is read from Postgres once, when not configured)."""
    extensions = current_app.extensions
    if "boomerang.stream_tokens" not in extensions:
        extensions["boomerang.stream_tokens"] = StreamTokens(settings(), db)
    return extensions["boomerang.stream_tokens"]


def is_chunked(headers: Any) -> bool:
    return "chunked" in headers.get("Transfer-Encoding", "").lower()


def buffer_chunked_body(environ: dict[str, Any], max_bytes: int) -> None:
    """Read a chunked body whole, or refuse it with 413 once it passes ``max_bytes``.

    A chunked body declares no length. Werkzeug stops reading it at the limit without saying so,
    and the parser then sees truncated JSON: a 400 that blames the client's syntax. Reading one
    byte past the limit here tells "too large" from "exactly the limit"; the body is then
    handed on with its length, as if the client had sent Content-Length.
    """
    stream = environ["wsgi.input"]
    body = bytearray()
    while len(body) <= max_bytes:
        chunk = stream.read(min(64 * 1024, max_bytes + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    if len(body) > max_bytes:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(bytes(body))
    environ["CONTENT_LENGTH"] = str(len(body))


def is_api_path(path: str) -> bool:
    """Whether ``path`` is under the JSON API."""
    return path == API_PREFIX or path.startswith(f"{API_PREFIX}/")


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
