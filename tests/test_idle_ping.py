"""Pooled connections are pinged before use only after sitting idle: a busy process spends no
round trip on it, and a connection Postgres dropped while it sat in the pool is replaced unseen."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.db import SERVER_KEEPALIVES, SERVER_USER_TIMEOUT_MS, make_engine, ping_idle_connections


@pytest.fixture
def pooled(settings):
    """An engine with one pooled connection; the ping threshold is set per test."""
    url = make_url(settings.database_url).set(drivername="postgresql+psycopg2")
    engines = []

    def make(idle_seconds: float):
        engine = create_engine(url, pool_size=1, max_overflow=0)
        ping_idle_connections(engine, idle_seconds)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT pg_backend_pid()"))


def terminate(engine, pid: int) -> None:
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.commit()


def test_a_connection_dropped_while_idle_is_replaced_before_use(pooled, engine):
    pool = pooled(idle_seconds=0.0)
    first = backend_pid(pool)
    terminate(engine, first)

    assert backend_pid(pool) != first  # no error: the ping found it dead and the pool reconnected


def test_a_connection_used_a_moment_ago_is_not_pinged(pooled, engine):
    pool = pooled(idle_seconds=3600.0)
    first = backend_pid(pool)
    terminate(engine, first)

    # Nothing checked it on the way out of the pool, so the statement meets the dead connection.
    with pytest.raises(OperationalError):
        backend_pid(pool)
    # ... and SQLAlchemy replaced it after that one failure.
    assert backend_pid(pool) != first


def test_the_server_probes_every_connection_so_a_dead_hosts_sessions_end(settings):
    # Over TCP, as a worker on another host connects (the settings do nothing on a Unix socket).
    engine = make_engine(settings)
    try:
        with engine.connect() as connection:
            shown = {
                name: int(connection.execute(text(f"SHOW {name}")).scalar_one())
                for name in SERVER_KEEPALIVES
            }
            user_timeout = connection.execute(text("SHOW tcp_user_timeout")).scalar_one()
    finally:
        engine.dispose()
    assert shown == SERVER_KEEPALIVES
    assert int(user_timeout) == SERVER_USER_TIMEOUT_MS
