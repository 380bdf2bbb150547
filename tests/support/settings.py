"""Where the tests' Postgres and Redis are, and scratch databases on them.

TEST_POSTGRES_URL and TEST_REDIS_URL point at the servers; TEST_DATABASE_PREFIX starts every
database name, so two test runs can share one Postgres server without dropping each other's
databases.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psycopg2.extensions
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db import ensure_database
from app.db_deadline import make_wait_callback
from app.migrate import upgrade_database
from config.settings import Settings

PG_ROOT = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_ROOT = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
DATABASE_PREFIX = os.environ.get("TEST_DATABASE_PREFIX", "boomerang")
# How long making a scratch database may wait on Postgres. A test process that built an app runs
# with the app's few-second deadlines installed, and a DROP DATABASE WITH (FORCE) waits for the
# backends it ends: with several stacks busy on two cores, that took longer than those seconds.
SCRATCH_DATABASE_SECONDS = 120.0


def worker_number(worker_id: str) -> int:
    """0 for a plain run, 1.. for each xdist worker."""
    return 0 if worker_id == "master" else int(worker_id.removeprefix("gw")) + 1


def database_name(purpose: str, number: int) -> str:
    """The database of one test worker for one purpose, e.g. ``boomerang_e2e_1``."""
    return f"{DATABASE_PREFIX}_{purpose}_{number}"


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
        # Tests share one client address and make many requests; the rate-limit tests set their
        # own tiny limit.
        "BOOMERANG_RATE_LIMIT": "100000 per minute",
    }
    base.update(env)
    return Settings.from_env(base)


@contextlib.contextmanager
def patient_waits(seconds: float = SCRATCH_DATABASE_SECONDS) -> Iterator[None]:
    """Within the block, this process waits on Postgres up to ``seconds`` (never forever), then
    goes back to the deadlines it had."""
    before = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(make_wait_callback(seconds, seconds))
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(before)


def drop_database(settings: Settings) -> None:
    """Drop the settings' database, if it exists, whoever is connected to it."""
    url = make_url(settings.database_url)
    admin = create_engine(
        url.set(database="postgres", drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with patient_waits(), admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def recreate_database(settings: Settings) -> None:
    """Drop and recreate the database, then migrate it: every run starts from the migrations."""
    with patient_waits():
        drop_database(settings)
        ensure_database(settings)
        upgrade_database(settings)
