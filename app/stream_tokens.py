"""Job-scoped, expiring, signed tokens for a job's stream: what a browser holds instead of a key.

A token names one job and the moment it was made, signed with the installation's stream key
(``BOOMERANG_SECRET_KEY``, or one made once and kept in Postgres like the portal's). It reads
that job's events and state, nothing else, until ``BOOMERANG_STREAM_TOKEN_SECONDS`` have passed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from app.portal.secret_key import stored_secret
from config.settings import Settings

STREAM_KEY_NAME = "stream_token_key"
_SALT = "boomerang.stream-token"
STREAM_PREFIX = "/stream"


class StreamTokens:
    """Makes and reads tokens; the key is read from the setting or Postgres once per process."""

    def __init__(self, settings: Settings, session: Callable[[], Session]) -> None:
        """``session`` gives a session to read (or make) the stored key with, committed here."""
        self.settings = settings
        self._session = session
        self._key: str | None = settings.secret_key or None
        self._lock = threading.Lock()

    def _serializer(self) -> URLSafeTimedSerializer:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    session = self._session()
                    key = stored_secret(session, STREAM_KEY_NAME)
                    session.commit()
                    self._key = key
        return URLSafeTimedSerializer(self._key, salt=_SALT)

    def make(self, job_id: uuid.UUID) -> str:
        return self._serializer().dumps(job_id.hex)

    def read(self, token: str) -> uuid.UUID | None:
        """The job a valid, unexpired token names, or None."""
        try:
            job_hex = self._serializer().loads(token, max_age=self.settings.stream_token_seconds)
            return uuid.UUID(hex=job_hex)
        except (BadSignature, ValueError, TypeError):
            return None


def stream_url(settings: Settings, job_id: uuid.UUID, token: str) -> str:
    """The public URL of a job's event stream, token included."""
    return f"{settings.public_url}{STREAM_PREFIX}/v1/jobs/{job_id}/events?token={token}"
