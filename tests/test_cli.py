"""The ``boomerang key`` and ``boomerang tenant delete`` commands, run through click against the
test database; and ``boomerang receiver``, run as the process it is.

The commands commit in their own connections, so these tests commit too, and delete every tenant
they made afterwards (which, by cascade, deletes everything else they made).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from app.cli import main
from app.models import (
    ApiKey,
    Delivery,
    DeliveryAttempt,
    DeliveryReplay,
    EventType,
    Message,
    PortalLink,
    Tenant,
)
from app.services.tenants import authenticate
from tests.factories import make_callback, make_delivery, make_job, make_tenant
from tests.support.processes import free_port

Invoke = Callable[..., Result]
BOOMERANG = str(Path(sys.executable).parent / "boomerang")


@pytest.fixture
def committed(engine) -> Iterator[tuple[Session, list[uuid.UUID]]]:
    """A session whose commits are real, and a list of tenant ids to delete at the end."""
    made: list[uuid.UUID] = []
    with Session(engine, expire_on_commit=False) as session:
        yield session, made
        session.rollback()
        session.execute(delete(Tenant).where(Tenant.id.in_(made)))
        session.commit()


@pytest.fixture
def invoke(settings) -> Invoke:
    """Run ``boomerang <args>`` against the test database; fail on a non-zero exit unless told."""

    def run(*args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(
            main,
            list(args),
            env={"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url},
        )
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


def new_tenant(committed, name: str = "acme") -> tuple[Tenant, str]:
    session, made = committed
    tenant, api_key = make_tenant(session, name)
    made.append(tenant.id)
    session.commit()
    return tenant, api_key


def one_json_line(result: Result) -> dict[str, Any]:
    (line,) = result.stdout.splitlines()
    return json.loads(line)


# boomerang key ------------------------------------------------------------------------------------


def test_key_create_prints_one_json_line_with_a_working_key(invoke, committed):
    tenant, _ = new_tenant(committed)

    printed = one_json_line(invoke("key", "create", str(tenant.id)))

    assert set(printed) == {"tenant_id", "key_id", "api_key"}
    assert printed["tenant_id"] == str(tenant.id)
    session, _ = committed
    found = authenticate(session, printed["api_key"])
    assert found is not None
    assert found.id == tenant.id
    stored = session.get(ApiKey, uuid.UUID(printed["key_id"]))
    assert stored.tenant_id == tenant.id
    assert printed["api_key"].partition(".")[2] not in stored.secret_hash


def test_key_create_for_an_unknown_tenant_fails_naming_it(invoke):
    result = invoke("key", "create", str(uuid.uuid4()), ok=False)

    assert result.exit_code == 1
    assert "No such tenant." in result.stderr


def test_key_create_refuses_an_id_that_is_not_a_uuid(invoke):
    result = invoke("key", "create", "acme", ok=False)

    assert result.exit_code == 2
    assert "is not a tenant id" in result.stderr


def test_key_list_prints_each_key_without_its_secret(invoke, committed):
    tenant, first_key = new_tenant(committed)
    second = one_json_line(invoke("key", "create", str(tenant.id)))
    new_tenant(committed, "globex")  # its keys must not be listed

    result = invoke("key", "list", str(tenant.id))

    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(listed) == 2
    assert second["key_id"] in {k["key_id"] for k in listed}
    assert first_key.partition(".")[0] in {k["prefix"] for k in listed}
    for key in listed:
        assert set(key) == {"key_id", "tenant_id", "prefix", "created_at", "revoked_at"}
        assert key["tenant_id"] == str(tenant.id)
        assert key["revoked_at"] is None
    assert first_key.partition(".")[2] not in result.stdout
    assert second["api_key"].partition(".")[2] not in result.stdout


@pytest.mark.parametrize("by", ["prefix", "id", "whole key"])
def test_key_revoke_refuses_the_key_from_then_on(invoke, committed, by):
    tenant, api_key = new_tenant(committed)
    session, _ = committed
    key = session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant.id))
    ref = {"prefix": key.prefix, "id": str(key.id), "whole key": api_key}[by]

    printed = one_json_line(invoke("key", "revoke", ref))

    assert printed["key_id"] == str(key.id)
    assert printed["revoked_at"] is not None
    session.expire_all()
    assert session.get(ApiKey, key.id).revoked_at is not None
    # The CLI may revoke a tenant's last key: an operator locking a tenant out means it.
    assert authenticate(session, api_key) is None


def test_key_revoke_of_an_unknown_key_fails(invoke):
    result = invoke("key", "revoke", "bmr_000000000000", ok=False)

    assert result.exit_code == 1
    assert "No such API key." in result.stderr


# boomerang tenant delete --------------------------------------------------------------------------


def populate(session: Session, tenant: Tenant) -> None:
    """One of everything a tenant can own: a key, a callback, a job, messages, deliveries (to a
    callback and to an ad-hoc URL), an attempt, a type in its event catalogue, a bulk replay and
    a portal link."""
    session.add(EventType(tenant_id=tenant.id, name="invoice.paid"))
    callback = make_callback(session, tenant, "http://127.0.0.1:9/hook")
    job = make_job(session, tenant)
    delivery = make_delivery(session, callback, job_id=job.id)
    session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            attempted_at=datetime.now(UTC),
            request_headers={"webhook-id": "msg_1"},
            response_status=500,
            duration_ms=3,
            succeeded=False,
        )
    )
    message = Message(tenant_id=tenant.id, job_id=job.id, event_type="job.succeeded", body="{}")
    session.add(message)
    session.flush()
    session.add(Delivery(tenant_id=tenant.id, message_id=message.id, url="http://127.0.0.1:9/x"))
    now = datetime.now(UTC)
    session.add(
        DeliveryReplay(
            tenant_id=tenant.id,
            request_fingerprint="0" * 64,
            search={"status": "failed"},
            matched=1,
            created_at=now,
        )
    )
    key_id = session.scalar(select(ApiKey.id).where(ApiKey.tenant_id == tenant.id))
    session.add(
        PortalLink(
            tenant_id=tenant.id,
            api_key_id=key_id,
            token_hash=uuid.uuid4().hex * 2,
            expires_at=now + timedelta(minutes=5),
        )
    )
    session.flush()


def rows_of(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    """How many rows of the tenant each table holds: every table with a ``tenant_id`` column
    (found in the database itself, so a table added later is covered), plus the attempts."""
    tables = session.scalars(
        text(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name = 'tenant_id' "
            "ORDER BY table_name"
        )
    ).all()
    counts = {
        table: session.scalar(
            text(f'SELECT count(*) FROM "{table}" WHERE tenant_id = :id'), {"id": tenant_id}
        )
        for table in tables
    }
    counts["tenant"] = session.scalar(
        text("SELECT count(*) FROM tenant WHERE id = :id"), {"id": tenant_id}
    )
    counts["delivery_attempt"] = session.scalar(
        text(
            "SELECT count(*) FROM delivery_attempt a JOIN delivery d ON d.id = a.delivery_id "
            "WHERE d.tenant_id = :id"
        ),
        {"id": tenant_id},
    )
    return counts


def test_tenant_delete_leaves_no_row_of_the_tenant_in_any_table(invoke, committed):
    session, _ = committed
    doomed, _ = new_tenant(committed)
    kept, kept_key = new_tenant(committed, "globex")
    populate(session, doomed)
    populate(session, kept)
    attempt_ids = set(session.scalars(select(DeliveryAttempt.id)))
    session.commit()
    before = rows_of(session, doomed.id)
    assert {"api_key", "callback", "job", "message", "delivery", "tenant"} <= set(before)
    assert all(count > 0 for count in before.values()), before
    kept_before = rows_of(session, kept.id)
    doomed_id, kept_id = doomed.id, kept.id

    printed = one_json_line(invoke("tenant", "delete", str(doomed_id)))

    assert printed == {
        "tenant_id": str(doomed_id),
        "deleted": {
            "api_keys": 1,
            "callbacks": 1,
            "jobs": 1,
            "messages": 2,
            "deliveries": 2,
            "delivery_attempts": 1,
        },
    }
    session.expire_all()
    after = rows_of(session, doomed_id)
    assert after == dict.fromkeys(before, 0)
    assert rows_of(session, kept_id) == kept_before
    remaining_attempts = set(session.scalars(select(DeliveryAttempt.id))) & attempt_ids
    assert len(remaining_attempts) == 1  # the other tenant's
    assert authenticate(session, kept_key) is not None


def test_tenant_delete_of_an_unknown_tenant_fails(invoke):
    result = invoke("tenant", "delete", str(uuid.uuid4()), ok=False)

    assert result.exit_code == 1
    assert "No such tenant." in result.stderr


# boomerang receiver -------------------------------------------------------------------------------


def test_receiver_prints_each_delivery_and_whether_its_signature_holds():
    secret = "whsec_" + base64.b64encode(b"a secret of 24 bytes....").decode()
    port = free_port()
    process = subprocess.Popen(
        [BOOMERANG, "receiver", "--port", str(port), "--secret", secret, "--status", "202"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == (
            f"listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)\n"
        )
        body = '{"type":"job.succeeded"}'
        now = datetime.now(UTC)
        signed = {
            "webhook-id": "msg_good",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_good", now, body),
        }
        forged = {**signed, "webhook-id": "msg_forged"}
        # Closed before Ctrl-C: the receiver waits for open connections when it stops.
        with requests.Session() as http:
            answers = [
                http.post(f"http://127.0.0.1:{port}/hook", data=body, headers=headers, timeout=5)
                for headers in (signed, forged)
            ]
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = process.communicate(timeout=10)

    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[0].content == b""
    assert output.splitlines() == [
        "POST /hook  webhook-id=msg_good  signature verified",
        body,
        "",
        "POST /hook  webhook-id=msg_forged  SIGNATURE REJECTED: No matching signature found",
        body,
        "",
    ]
    assert process.returncode == 0
