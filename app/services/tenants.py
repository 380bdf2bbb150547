"""Tenants and their API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ApiKey, Tenant
from app.signing import new_signing_secret

KEY_PREFIX = "bmr"


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    api_key: str


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, tenant: Tenant) -> str:
    """Add a key for ``tenant`` and return it in full; only its hash is stored."""
    prefix = f"{KEY_PREFIX}_{secrets.token_hex(6)}"
    secret = secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, prefix=prefix, secret_hash=_hash_secret(secret)))
    session.flush()
    return f"{prefix}.{secret}"


def create_tenant(session: Session, name: str) -> NewTenant:
    """A tenant with its own signing secret and a first API key."""
    tenant = Tenant(name=name, signing_secret=new_signing_secret())
    session.add(tenant)
    session.flush()
    return NewTenant(tenant=tenant, api_key=create_api_key(session, tenant))


def authenticate(session: Session, api_key: str) -> Tenant | None:
    """The tenant owning an unrevoked ``api_key``, or None."""
    prefix, dot, secret = api_key.partition(".")
    if not dot or not prefix.startswith(f"{KEY_PREFIX}_"):
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)))
    if key is None:
        return None
    if not hmac.compare_digest(key.secret_hash, _hash_secret(secret)):
        return None
    return key.tenant
