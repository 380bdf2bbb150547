"""The ``Idempotency-Key`` request header, read and checked once for every route that takes it."""

from __future__ import annotations

from flask import request

from app.errors import InvalidField

IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key() -> str | None:
    """The request's key, or None; a key that cannot be stored is a 422 naming the header."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and (not 1 <= len(key) <= 255 or "\x00" in key):
        raise InvalidField(
            "headers", IDEMPOTENCY_HEADER, "must be 1 to 255 characters, without NUL"
        )
    return key
