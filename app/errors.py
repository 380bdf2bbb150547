"""The ApiError family and the one handler that gives every error the same JSON shape.

Shape: ``{"code": int, "status": str, "message": str, "errors": {...}?}`` -- the shape
flask-smorest already uses for validation errors, so 404s, 413s and 500s look the same.
Services raise these without importing Flask, which workers can share.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, a message and, for input problems, the fields at fault."""

    code = 400
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, message: str, errors: dict[str, Any] | None = None, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors
        if code is not None:
            self.code = code


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError):
    code = 404


class Conflict(ApiError):
    code = 409


class InvalidField(ApiError):
    """A 422 naming one field, in the same place webargs puts schema errors."""

    code = 422

    def __init__(self, location: str, field: str, message: str, within: tuple[str, ...] = ()):
        # ``within``: where the field sits, as the schema nests it (("events", "3") for the
        # fourth event of a batch), so both kinds of error read alike.
        errors: dict[str, Any] = {field: [message]}
        for key in reversed(within):
            errors = {key: errors}
        name = ".".join((*within, field))
        super().__init__(f"Invalid {name}: {message}", {location: errors})


class Unavailable(ApiError):
    code = 503


def error_body(code: int, message: str | None = None, errors: Any = None) -> dict[str, Any]:
    """The one error shape."""
    body: dict[str, Any] = {
        "code": code,
        "status": HTTPStatus(code).phrase,
        "message": message or HTTPStatus(code).description,
    }
    if errors:
        body["errors"] = errors
    return body


# An app may keep here a function that answers an error as an HTML page for the paths it serves
# to people (the portal), or None for the rest, which get the JSON shape.
ERROR_PAGES = "boomerang.error_pages"


def error_response(
    code: int, message: str | None = None, errors: Any = None, headers: Any = None
) -> Response:
    """A JSON response in the one error shape, for handlers outside this module too (a page in
    the portal: errors the router or the database raise never reach its blueprint's handlers)."""
    from flask import current_app, has_request_context, jsonify

    page = None
    if has_request_context() and ERROR_PAGES in current_app.extensions:
        page = current_app.extensions[ERROR_PAGES](code, message or HTTPStatus(code).description)
    response = page if page is not None else jsonify(error_body(code, message, errors))
    response.status_code = code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Route ApiError, HTTP exceptions and anything unexpected through ``error_body``."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError):
        return error_response(exc.code, exc.message, exc.errors, exc.headers)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        code = exc.code or 500
        data = getattr(exc, "data", None) or {}
        messages = data.get("messages")
        message = data.get("message") or exc.description
        if messages:
            message = "The request has invalid fields; see errors."
        headers = dict(data.get("headers") or {})
        if code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return error_response(code, message, messages, headers)

    @app.errorhandler(DBAPIError)
    def handle_database_error(exc: DBAPIError):
        if exc.connection_invalidated or isinstance(exc.orig, _operational_errors()):
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            return database_unavailable()
        log.exception("database error")
        return error_response(500, "Internal server error.")

    @app.errorhandler(PoolTimeout)
    def handle_pool_timeout(_exc: PoolTimeout):
        # Every pooled connection is busy, most likely each waiting on a Postgres that does not
        # answer: the same outage, seen from the pool.
        log.warning("database unavailable: no free connection in the pool")
        return database_unavailable()

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        # Never leak exception text or a trace: it may hold SQL, secrets or paths.
        log.exception("unhandled error")
        return error_response(500, "Internal server error.")


def database_unavailable() -> Response:
    """The 503 for a database that is down or does not answer in time."""
    return error_response(
        503, "The database is unavailable; try again shortly.", headers={"Retry-After": "5"}
    )


def _operational_errors() -> tuple[type[BaseException], ...]:
    import psycopg2

    return (psycopg2.OperationalError, psycopg2.InterfaceError)
