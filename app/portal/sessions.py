"""The portal's session: Flask's signed cookie, only under /portal, with the key from
``secret_key`` and the Secure flag whenever the browser reaches us over TLS."""

from __future__ import annotations

import threading

from flask import Flask, Request, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.exc import DBAPIError

from app.portal.secret_key import SESSION_KEY_NAME, stored_secret
from app.web import db
from config.settings import Settings

PORTAL_PREFIX = "/portal"
COOKIE_NAME = "boomerang_portal"


def is_portal_page(path: str) -> bool:
    """A portal page (static files need no session)."""
    in_portal = path == PORTAL_PREFIX or path.startswith(PORTAL_PREFIX + "/")
    return in_portal and not path.startswith(PORTAL_PREFIX + "/static/")


class PortalSessionInterface(SecureCookieSessionInterface):
    """Sessions for portal pages only: the API authenticates every request with its key and must
    never be steered by a cookie."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key: str | None = settings.secret_key or None
        self._lock = threading.Lock()

    def signing_key(self) -> str:
        """The configured key, or the stored one, read from Postgres once per process."""
        if self._key is None:
            with self._lock:
                if self._key is None:
                    session = db()
                    key = stored_secret(session, SESSION_KEY_NAME)
                    session.commit()
                    self._key = key
        return self._key

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        return URLSafeTimedSerializer(
            self.signing_key(),
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not is_portal_page(request.path):
            return None
        try:
            return super().open_session(app, request)
        except DBAPIError:
            # The key could not be read. A null session; the portal's first hook asks for the
            # key again inside the request, where the database error gets its proper 503.
            return None

    def get_cookie_secure(self, app: Flask) -> bool:
        # Behind TLS (directly, or through a proxy gunicorn trusts for X-Forwarded-Proto), or
        # when the public URL says clients come in over https.
        return request.is_secure or self.settings.public_url.startswith("https://")


def init_app(app: Flask, settings: Settings) -> None:
    """Use the portal's session for the app."""
    app.session_interface = PortalSessionInterface(settings)
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH=PORTAL_PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=settings.portal_session_seconds,
    )
