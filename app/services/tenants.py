"""Tenants and their API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.key_generation import api_keys_changed
from app.models import ApiKey, Callback, Delivery, DeliveryAttempt, Job, Message, Tenant
from app.prepared import PreparedStatement
from app.signing import new_signing_secret

KEY_PREFIX = "bmr"


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    api_key: str


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    api_key: str


def issue_api_key(session: Session, tenant: Tenant) -> NewApiKey:
    """Add a key for ``tenant``; the full key is in the answer only, its hash in the database."""
    prefix = f"{KEY_PREFIX}_{secrets.token_hex(6)}"
    secret = secrets.token_urlsafe(32)
    key = ApiKey(tenant_id=tenant.id, prefix=prefix, secret_hash=_hash_secret(secret))
    session.add(key)
    session.flush()
    return NewApiKey(key=key, api_key=f"{prefix}.{secret}")


def create_tenant(session: Session, name: str) -> NewTenant:
    """A tenant with its own signing secret and a first API key."""
    tenant = Tenant(name=name, signing_secret=new_signing_secret())
    session.add(tenant)
    session.flush()
    return NewTenant(tenant=tenant, api_key=issue_api_key(session, tenant).api_key)


_TENANT_COLUMNS = list(Tenant.__table__.columns.keys())
_AUTHENTICATE = PreparedStatement(
    "boomerang_authenticate",
    text(
        f"""
        SELECT {", ".join(f"tenant.{column}" for column in _TENANT_COLUMNS)},
               api_key.secret_hash
        FROM tenant JOIN api_key ON api_key.tenant_id = tenant.id
        WHERE api_key.prefix = :prefix AND api_key.revoked_at IS NULL
        """
    ),
)


def authenticate(session: Session, api_key: str) -> Tenant | None:
    """The tenant owning an unrevoked ``api_key``, or None."""
    prefix, dot, secret = api_key.partition(".")
    if not dot or not prefix.startswith(f"{KEY_PREFIX}_"):
        return None
    # One round trip for the key and its tenant, read as a plain row: this runs before every API
    # request, and the tenant is only read from (a transient object, never added to a session).
    # Prepared (app/prepared.py): planning it cost Postgres more than running it.
    found = _AUTHENTICATE.execute(session.connection(), {"prefix": prefix}).one_or_none()
    if found is None:
        return None
    values = found._asdict()
    if not hmac.compare_digest(values.pop("secret_hash"), _hash_secret(secret)):
        return None
    return Tenant(**values)


def get_tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    """One tenant by id."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    return tenant


def list_api_keys(session: Session, tenant: Tenant) -> list[ApiKey]:
    """Every key of ``tenant``, revoked ones included, oldest first."""
    return list(
        session.scalars(
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant.id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
    )


def get_api_key(session: Session, tenant: Tenant, key_id: uuid.UUID) -> ApiKey:
    """One of the tenant's keys; another tenant's is as absent as a missing one."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant.id))
    if key is None:
        raise NotFound("No such API key.")
    return key


def revoke_api_key(
    session: Session, tenant: Tenant, key_id: uuid.UUID, now: datetime, *, keep_one: bool = True
) -> ApiKey:
    """Revoke one of the tenant's keys; the next request made with it is refused.

    Revoking the key the request itself was made with is allowed: rotate by creating a new key,
    then revoking the old one with either. With ``keep_one`` (the API's choice), revoking the
    tenant's last active key is a 409 instead, because that would lock the tenant out for good
    and only an operator could let it back in; an operator revoking from the CLI passes
    ``keep_one=False``. Revoking a key already revoked changes nothing.
    """
    key = get_api_key(session, tenant, key_id)
    if key.revoked_at is not None:
        return key
    if keep_one:
        # Lock every active key of the tenant, in a fixed order, so two requests revoking its
        # last two keys at once cannot both see "one left" and lock the tenant out together.
        active = session.scalars(
            select(ApiKey.id)
            .where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.id)
            .with_for_update()
        ).all()
        if key.id not in active:  # revoked meanwhile by a request that committed first
            session.refresh(key)
            return key
        if len(active) == 1:
            raise Conflict(
                "This is your last active API key; create another one before revoking it."
            )
    key.revoked_at = now
    session.flush()
    api_keys_changed(session)
    return key


def find_api_key(session: Session, prefix_or_id: str) -> ApiKey:
    """A key of any tenant by its id or its prefix (a whole key is cut to its prefix)."""
    ref = prefix_or_id.strip().partition(".")[0]
    try:
        condition = ApiKey.id == uuid.UUID(ref)
    except ValueError:
        condition = ApiKey.prefix == ref
    key = session.scalar(select(ApiKey).where(condition))
    if key is None:
        raise NotFound("No such API key.")
    return key


def delete_tenant(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    """Delete a tenant and, through the foreign keys' ON DELETE CASCADE, everything it owns.

    Answers how many rows of each kind went with it.
    """
    tenant = get_tenant(session, tenant_id)
    delivery_ids = select(Delivery.id).where(Delivery.tenant_id == tenant.id)
    counts = {
        "api_keys": _count(session, select(ApiKey).where(ApiKey.tenant_id == tenant.id)),
        "callbacks": _count(session, select(Callback).where(Callback.tenant_id == tenant.id)),
        "jobs": _count(session, select(Job).where(Job.tenant_id == tenant.id)),
        "messages": _count(session, select(Message).where(Message.tenant_id == tenant.id)),
        "deliveries": _count(session, select(Delivery).where(Delivery.tenant_id == tenant.id)),
        "delivery_attempts": _count(
            session,
            select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids)),
        ),
    }
    # A Core delete, so Postgres cascades in one statement instead of the ORM loading every row.
    session.execute(delete(Tenant).where(Tenant.id == tenant.id))
    session.expunge(tenant)
    api_keys_changed(session)
    return counts


def _count(session: Session, query: Any) -> int:
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0
