"""Revoking API keys when two requests race: the tenant always keeps one key."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.models import ApiKey, Tenant
from app.services.tenants import revoke_api_key
from tests.factories import make_api_key, make_tenant


def test_two_requests_revoking_a_tenants_last_two_keys_at_once_leave_one_active(engine):
    with Session(engine, expire_on_commit=False) as setup:
        tenant, _ = make_tenant(setup, "acme")
        make_api_key(setup, tenant)
        first, second = setup.scalars(select(ApiKey.id).where(ApiKey.tenant_id == tenant.id))
        setup.commit()
    outcome: list[BaseException | None] = []
    try:
        with Session(engine) as one, Session(engine) as two:
            revoke_api_key(one, tenant, first, datetime.now(UTC))  # holds the keys' row locks

            def revoke_second() -> None:
                try:
                    revoke_api_key(two, tenant, second, datetime.now(UTC))
                    two.commit()
                    outcome.append(None)
                except Conflict as exc:
                    two.rollback()
                    outcome.append(exc)

            racer = threading.Thread(target=revoke_second)
            racer.start()
            racer.join(timeout=0.5)
            assert racer.is_alive(), "the second revocation should wait for the first"
            one.commit()
            racer.join(timeout=5)

        assert len(outcome) == 1
        assert isinstance(outcome[0], Conflict)
        with Session(engine) as check:
            active = check.scalars(
                select(ApiKey.id).where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_(None))
            ).all()
        assert active == [second]
    finally:
        with Session(engine) as cleanup:
            cleanup.execute(delete(Tenant).where(Tenant.id == tenant.id))
            cleanup.commit()


def test_the_last_key_may_be_revoked_when_the_caller_does_not_ask_to_keep_one(db_session):
    tenant, _ = make_tenant(db_session, "acme")
    (only,) = db_session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id))

    with pytest.raises(Conflict):
        revoke_api_key(db_session, tenant, only.id, datetime.now(UTC))
    revoked = revoke_api_key(db_session, tenant, only.id, datetime.now(UTC), keep_one=False)

    assert revoked.revoked_at is not None
