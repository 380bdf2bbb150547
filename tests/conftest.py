"""Shared fixtures: a migrated Postgres database per test worker, a rolled-back session per test,
the Flask app bound to that session, and a real HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import delete
from sqlalchemy.orm import Session

from app import clock, create_app
from app.db import TaskCall, make_engine, set_task_sender
from app.jobtypes import load_job_modules
from app.models import Tenant
from app.queues import DELIVERY_WAKE, JOB_WAKE, Waker
from app.receiver import Receiver
from config.settings import Settings
from tests.factories import TenantWithKey, make_tenant
from tests.support.settings import (
    database_name,
    make_settings,
    recreate_database,
    worker_number,
)
from workers.delivery.http import OutboundClient


@pytest.fixture(autouse=True)
def host_clock_after_each_test() -> Iterator[None]:
    """An app a test builds follows its database's clock from a thread; the next test must not
    inherit that thread, nor its offset, nor its database."""
    yield
    clock.stop_following()


@pytest.fixture(scope="session")
def settings(worker_id: str) -> Settings:
    number = worker_number(worker_id)
    settings = make_settings(database_name("test", number), redis_db=number + 1)
    recreate_database(settings)
    load_job_modules(settings.job_modules)
    return settings


@pytest.fixture(scope="session")
def engine(settings: Settings):
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def sent_tasks() -> list[TaskCall]:
    """Tasks that would have been enqueued after commit."""
    return []


@pytest.fixture
def db_session(engine, sent_tasks: list[TaskCall]) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back after the test; its commits
    only release savepoints."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    set_task_sender(session, sent_tasks.extend)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def app(settings: Settings, db_session: Session):
    app = create_app(settings, session_factory=lambda: db_session)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app, db_session: Session):
    """A test client that commits the test's own setup before each request, as if it had been
    made earlier. Otherwise a request that fails would roll the setup back with it."""
    from flask.testing import FlaskClient

    class CommittingClient(FlaskClient):
        def open(self, *args: Any, **kwargs: Any):
            db_session.commit()
            return super().open(*args, **kwargs)

    app.test_client_class = CommittingClient
    return app.test_client()


@pytest.fixture
def tenant(db_session: Session) -> TenantWithKey:
    return make_tenant(db_session, "acme")


@pytest.fixture
def owner(tenant: TenantWithKey) -> Tenant:
    """The test tenant's row."""
    return tenant.row


@pytest.fixture
def auth(tenant: TenantWithKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


@pytest.fixture
def http(settings: Settings) -> Iterator[OutboundClient]:
    """The real outbound client deliveries go through."""
    client = OutboundClient(settings)
    yield client
    client.close()


@pytest.fixture
def other_auth(db_session: Session) -> dict[str, str]:
    _, api_key = make_tenant(db_session, "globex")
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def error_fields(response: Any) -> dict[str, Any]:
    """The ``errors`` of a JSON error response, flattened over locations."""
    body = response.get_json()
    assert set(body) >= {"code", "status", "message"}, body
    flat: dict[str, Any] = {}
    for fields in (body.get("errors") or {}).values():
        flat.update(fields)
    return flat


@pytest.fixture
def wakes(settings):
    sent: list[str] = []
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(*vars(DELIVERY_WAKE).values(), *vars(JOB_WAKE).values())
    yield Waker(settings.redis_url, lambda: sent.append("wake")), sent
    client.delete(*vars(DELIVERY_WAKE).values(), *vars(JOB_WAKE).values())
    client.close()


@pytest.fixture
def committed_tenant(engine):
    """A tenant committed for real, so that separate sessions see its rows; it is deleted
    afterwards with everything it owns."""
    with Session(engine) as session:
        owner, _ = make_tenant(session, "committed")
        session.commit()
        tenant_id = owner.id
    yield tenant_id
    with Session(engine) as session:
        session.execute(delete(Tenant).where(Tenant.id == tenant_id))
        session.commit()
