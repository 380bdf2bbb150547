"""Headers that make browsers and caches treat every answer conservatively."""

from __future__ import annotations

from flask import Flask, Response, request

from app.web import is_api_path

EVERY_RESPONSE = {
    # Never guess a type from the body: a JSON answer echoing input must not become HTML.
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
API_RESPONSE = {
    # Answers carry secrets (callback secrets, new API keys) and per-tenant data.
    "Cache-Control": "no-store",
    # JSON loads nothing.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
DOCS_PAGE = {
    # Swagger UI's files and its starter come from this origin and nothing runs inline; it fetches
    # /openapi.json and draws its icons from data: URLs. "Try it out" calls the API on this origin.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
}


PORTAL_RESPONSE = {
    # The portal's own stylesheet and script, nothing inline (no 'unsafe-inline': an injected
    # <script> or style attribute does nothing), and forms post only back to us.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}
PORTAL_PAGE = {
    # Pages carry per-tenant data and revealed secrets; the static files may be cached.
    "Cache-Control": "no-store",
}


def add_security_headers(response: Response) -> Response:
    """Set the headers on ``response``, overriding any a view chose."""
    response.headers.update(EVERY_RESPONSE)
    if is_api_path(request.path):
        response.headers.update(API_RESPONSE)
    if request.path == "/docs" or request.path.startswith("/docs/"):
        response.headers.update(DOCS_PAGE)
    if request.path == "/portal" or request.path.startswith("/portal/"):
        response.headers.update(PORTAL_RESPONSE)
        if not request.path.startswith("/portal/static/"):
            response.headers.update(PORTAL_PAGE)
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response, errors included (after_request sees those too)."""
    app.after_request(add_security_headers)
