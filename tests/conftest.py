"""Shared fixtures: a migrated Postgres database per test worker, a rolled-back session per test,
the Flask app bound to that session, and a real HTTP receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import create_app
from app.db import TaskCall, ensure_database, make_engine, set_task_sender
from app.migrate import upgrade_database
from config.settings import Settings
from tests.factories import make_tenant
from tests.receiver import Receiver
from workers.jobs import load_job_modules

PG_ROOT = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_ROOT = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# Lets two test runs share one Postgres server without dropping each other's databases.
DATABASE_PREFIX = os.environ.get("TEST_DATABASE_PREFIX", "boomerang")


def worker_number(worker_id: str) -> int:
    """0 for a plain run, 1.. for each xdist worker."""
    return 0 if worker_id == "master" else int(worker_id.removeprefix("gw")) + 1


def make_settings(database: str, redis_db: int, **env: str) -> Settings:
    """Settings for tests: short retries, tight timeouts, local receivers allowed."""
    base = {
        "DATABASE_URL": f"{PG_ROOT}/{database}",
        "REDIS_URL": f"{REDIS_ROOT}/{redis_db}",
        "BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true",
        "BOOMERANG_RETRY_SCHEDULE": "1,2,4",
        "BOOMERANG_RETRY_JITTER": "0",
        "BOOMERANG_CONNECT_TIMEOUT_SECONDS": "1",
        "BOOMERANG_READ_TIMEOUT_SECONDS": "1",
        "BOOMERANG_DELIVERY_LEASE_SECONDS": "10",
        "BOOMERANG_TOTAL_TIMEOUT_SECONDS": "3",
        "BOOMERANG_SWEEP_INTERVAL_SECONDS": "0.5",
        "BOOMERANG_REQUEUE_AFTER_SECONDS": "5",
        # Tests share one client address and make many requests; the rate-limit tests set their
        # own tiny limit.
        "BOOMERANG_RATE_LIMIT": "100000 per minute",
    }
    base.update(env)
    return Settings.from_env(base)


def recreate_database(settings: Settings) -> None:
    """Drop and recreate the database, then migrate it: every run starts from the migrations."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    admin = create_engine(
        url.set(database="postgres", drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()
    ensure_database(settings)
    upgrade_database(settings)


@pytest.fixture(scope="session")
def settings(worker_id: str) -> Settings:
    number = worker_number(worker_id)
    settings = make_settings(f"{DATABASE_PREFIX}_test_{number}", redis_db=number + 1)
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
def tenant(db_session: Session):
    tenant, api_key = make_tenant(db_session, "acme")
    return tenant, api_key


@pytest.fixture
def auth(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant[1]}"}


@pytest.fixture
def other_auth(db_session: Session) -> dict[str, str]:
    _, api_key = make_tenant(db_session, "globex")
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def error_fields(response: Any) -> dict[str, Any]:
    """The ``errors`` of a JSON error response, flattened over locations."""
    body = response.get_json()
    assert set(body) >= {"code", "status", "message"}, body
    flat: dict[str, Any] = {}
    for fields in (body.get("errors") or {}).values():
        flat.update(fields)
    return flat
