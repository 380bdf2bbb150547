"""Checking that a callback Boomerang sent is genuine, with the Standard Webhooks reference
implementation (the scheme Boomerang signs with)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from boomerang_client.errors import InvalidSignatureError


class Headers(Protocol):
    """A dict, or any framework's headers (Flask's, Django's ``request.headers``, httpx's)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def verify(body: bytes | str, headers: Headers, secret: str | Iterable[str]) -> Any:
    """The callback's JSON body, once its signature and timestamp check out; else
    InvalidSignatureError.

    ``body`` must be the bytes exactly as received, before any JSON parsing. ``headers`` is any
    mapping of the request's headers (their case does not matter). ``secret`` is the callback's
    ``whsec_…`` secret, or several: during a rotation, pass the new and the previous one.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("no secret to verify with")
    problem = ""
    for candidate in secrets:
        try:
            return Webhook(candidate).verify(body, dict(headers.items()))
        except WebhookVerificationError as exc:
            problem = str(exc)
    raise InvalidSignatureError(problem)
