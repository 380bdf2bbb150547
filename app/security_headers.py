"""Headers that make browsers and caches treat every answer conservatively."""

from __future__ import annotations

from flask import Flask, Response, request

EVERY_RESPONSE = {
    # Never guess a type from the body: a JSON answer echoing input must not become HTML.
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
API_RESPONSE = {
    # Answers carry secrets (callback secrets, new API keys) and per-tenant data.
    "Cache-Control": "no-store",
    # JSON loads nothing. Only the API gets this: /docs loads Swagger UI from a CDN.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
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
    if request.path == "/v1" or request.path.startswith("/v1/"):
        response.headers.update(API_RESPONSE)
    if request.path == "/portal" or request.path.startswith("/portal/"):
        response.headers.update(PORTAL_RESPONSE)
        if not request.path.startswith("/portal/static/"):
            response.headers.update(PORTAL_PAGE)
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response, errors included (after_request sees those too)."""
    app.after_request(add_security_headers)
