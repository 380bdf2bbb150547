"""Secrets and signatures: Standard Webhooks for deliveries, HMAC for redirect parameters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_signing_secret() -> str:
    """A fresh ``whsec_`` secret: 24 random bytes, base64, as Standard Webhooks expects."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign_webhook(secrets_in_use: Iterable[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,...`` entry per secret, space-separated.

    Several entries let a receiver keep verifying with its old secret during a rotation.
    """
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets_in_use)


def sign_redirect(secret: str, job_id: str, status: str) -> str:
    """URL-safe HMAC-SHA256 over ``job_id.status`` with the tenant's signing secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{job_id}.{status}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
