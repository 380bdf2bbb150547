"""The portal blueprint: the sign-in guard, CSRF on every POST, HTML errors, template helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import NullSession, SecureCookieSession
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from app.errors import ApiError, Forbidden, Unavailable
from app.headers import masked_headers
from app.portal.auth import is_read_only, signed_in, signed_in_tenant
from app.portal.csrf import FIELD as CSRF_FIELD
from app.portal.csrf import check_csrf, csrf_token
from app.portal.sessions import PortalSessionInterface, is_portal_page

bp = Blueprint(
    "portal",
    __name__,
    url_prefix="/portal",
    template_folder="templates",
    static_folder="static",
)

# Reachable without signing in.
PUBLIC_ENDPOINTS = frozenset({"portal.sign_in", "portal.link", "portal.static"})
# What a read-only session may still POST.
READ_ONLY_MAY_POST = frozenset({"portal.sign_out"})


@bp.before_request
def guard() -> Response | None:
    """Every portal request: a working session, the CSRF token on a POST, and a signed-in tenant
    (except for the sign-in page and static files)."""
    if request.endpoint == "portal.static":
        return None
    if not isinstance(session, SecureCookieSession) or isinstance(session, NullSession):
        # The signing key could not be read when the session was opened; asking again here lets
        # a database error answer as a 503 like anywhere else.
        interface = current_app.session_interface
        if isinstance(interface, PortalSessionInterface):
            interface.signing_key()
        raise Unavailable("Sessions are unavailable; try again shortly.")
    if request.method == "POST":
        check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if signed_in_tenant() is not None:
        if (
            request.method == "POST"
            and is_read_only()
            and request.endpoint not in READ_ONLY_MAY_POST
        ):
            raise Forbidden(
                "You are signed in read-only: you can look at everything, change nothing."
            )
        return None
    return redirect(url_for("portal.sign_in"), code=303)  # type: ignore[return-value]


def error_page(code: int, message: str) -> tuple[str, int]:
    """An error as an HTML page in the portal's frame. A server-side error's page does not ask
    who is signed in: that needs the database, which may be what failed."""
    page = render_template("portal/error.html", code=code, message=message, bare=code >= 500)
    return page, code


def portal_error_page(code: int, message: str) -> Response | None:
    """The app-wide errors (an id the router refused, a database outage) as portal pages, for
    portal paths only; the API keeps its JSON."""
    if not is_portal_page(request.path):
        return None
    page, _ = error_page(code, message)
    return make_response(page)


@bp.errorhandler(ApiError)
def handle_api_error(exc: ApiError) -> Any:
    page, code = error_page(exc.code, exc.message)
    return page, code, dict(exc.headers)


@bp.errorhandler(HTTPException)
def handle_http_exception(exc: HTTPException) -> Any:
    return error_page(exc.code or 500, exc.description or "Something went wrong.")


def format_time(moment: datetime | None) -> str:
    """A timestamp as shown in the portal: UTC, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    """JSON indented for reading."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def format_ms(value: float | None) -> str:
    """A duration in milliseconds, or a dash."""
    return "—" if value is None else f"{value:,.0f} ms"


def format_rate(value: float | None) -> str:
    """A fraction as a percentage, or a dash."""
    return "—" if value is None else f"{value * 100:.1f} %"


def csrf_field() -> Markup:
    """The hidden CSRF input every form carries."""
    return Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf_token())}">')


@bp.app_context_processor
def portal_globals() -> dict[str, Any]:
    """What every portal template may use."""
    return {
        "csrf_field": csrf_field,
        "signed_in_tenant": signed_in_tenant,
        "signed_in": signed_in,
        "masked_headers": masked_headers,
    }


bp.add_app_template_filter(format_time, "time")
bp.add_app_template_filter(pretty_json, "pretty_json")
bp.add_app_template_filter(format_ms, "ms")
bp.add_app_template_filter(format_rate, "rate")
