"""A per-session CSRF token, checked on every POST to the portal.

Hand-written rather than Flask-WTF's CSRFProtect: the portal validates its forms with the API's
own marshmallow schemas (so it can never accept what the API refuses), which would leave WTForms
in the dependencies for this alone; and the whole mechanism is a random token kept in the signed
session cookie, put in every form, and compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

from app.errors import ApiError

FIELD = "csrf_token"
_SESSION_KEY = "csrf"


class CsrfRefused(ApiError):
    code = 400


def csrf_token() -> str:
    """This session's token, made on first use (the sign-in form needs one too: login CSRF)."""
    token = session.get(_SESSION_KEY)
    if not token:
        token = session[_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def renew_csrf_token() -> None:
    """Forget the token, so the next form gets a fresh one (on sign-in and sign-out)."""
    session.pop(_SESSION_KEY, None)


def check_csrf() -> None:
    """Refuse a POST whose form does not carry this session's token."""
    expected = session.get(_SESSION_KEY)
    sent = request.form.get(FIELD, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused(
            "This form is out of date or did not come from this site. Go back, reload the page "
            "and send it again."
        )
