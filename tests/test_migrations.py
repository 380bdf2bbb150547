"""The Alembic migrations and the models describe the same schema, 0010 moves the attempt log
into daily partitions without losing a row, and back, and Alembic run on its own finds the
database through the settings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

from app.db import ensure_database, make_engine
from app.migrate import alembic_config, include_name
from app.models import Base
from tests.support.settings import database_name, drop_database, make_settings, worker_number


def test_the_migrations_match_the_models(engine, settings):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_the_database_is_at_the_latest_revision(engine, settings):
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


@pytest.fixture
def scratch(worker_id: str) -> Iterator[Engine]:
    """An empty database of the test's own, dropped afterwards."""
    number = worker_number(worker_id)
    settings = make_settings(database_name("migration", number), redis_db=number + 1)
    ensure_database(settings)
    engine = make_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    yield engine
    engine.dispose()
    drop_database(settings)


def migrate(engine: Engine, revision: str, down: bool = False) -> None:
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def fill_the_attempt_log(conn: Connection, days: list[datetime]) -> None:
    """Attempts of one delivery on each of ``days``, as revision 0009's schema holds them."""
    conn.execute(
        text(
            "INSERT INTO tenant (id, name, signing_secret) "
            "VALUES ('00000000-0000-4000-8000-000000000001', 'acme', 'whsec_x');"
            "INSERT INTO message (id, tenant_id, event_type, body) "
            "VALUES ('00000000-0000-4000-8000-000000000002', "
            "'00000000-0000-4000-8000-000000000001', 'job.succeeded', '{}');"
            "INSERT INTO delivery (id, tenant_id, message_id, url, status, attempt_count) "
            "VALUES ('00000000-0000-4000-8000-000000000003', "
            "'00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002', "
            "'http://127.0.0.1:1/hook', 'failed', 3)"
        )
    )
    for day in days:
        conn.execute(
            text(
                "INSERT INTO delivery_attempt (id, delivery_id, attempted_at, request_headers, "
                "response_status, response_body, response_body_truncated, duration_ms, "
                "succeeded, error) "
                "SELECT gen_random_uuid(), '00000000-0000-4000-8000-000000000003', "
                ":day + n * interval '7 minutes', '{\"webhook-id\": \"msg_1\"}', "
                "CASE WHEN n % 2 = 0 THEN 200 END, 'body ' || n, false, n, n % 2 = 0, "
                "CASE WHEN n % 2 = 1 THEN 'timeout' END FROM generate_series(0, 99) AS n"
            ),
            {"day": day},
        )


def fingerprint(conn: Connection) -> tuple[int, str]:
    """How many attempts, and a digest of every column of every one."""
    count, digest = conn.execute(
        text("SELECT count(*), md5(string_agg(a::text, ',' ORDER BY a.id)) FROM delivery_attempt a")
    ).one()
    return count, digest


def index_definitions(conn: Connection, table: str) -> set[str]:
    rows = conn.scalars(text("SELECT indexdef FROM pg_indexes WHERE tablename = :t"), {"t": table})
    return {row.replace(f"public.{table} ", "public.T ") for row in rows}


def test_0010_moves_every_attempt_into_daily_partitions_and_back(scratch):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=40), today - timedelta(days=2), today]
    migrate(scratch, "0009")
    with scratch.begin() as conn:
        fill_the_attempt_log(conn, days)
        before = fingerprint(conn)
        plain_indexes = index_definitions(conn, "delivery_attempt")
    assert before[0] == 300

    migrate(scratch, "0010")
    with scratch.connect() as conn:
        assert fingerprint(conn) == before
        kind = conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'delivery_attempt'"))
        assert kind == "p"
        children = dict(
            conn.execute(
                text(
                    "SELECT c.relname, (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) "
                    "FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
                    "WHERE h.inhparent = 'delivery_attempt'::regclass"
                )
            ).all()
        )
        # Each day holding rows (the one far past retention too: the next prune drops it), today
        # and the days ahead, and the DEFAULT partition, which holds nothing.
        wanted = {d.date() for d in days} | {today.date() + timedelta(days=n) for n in range(4)}
        assert set(children) == {f"delivery_attempt_{d:%Y%m%d}" for d in wanted} | {
            "delivery_attempt_default"
        }
        assert set(children.values()) == {3}  # the key, by delivery, by time: in every partition
        assert conn.scalar(text("SELECT count(*) FROM delivery_attempt_default")) == 0
        assert index_definitions(conn, "delivery_attempt") == {
            "CREATE UNIQUE INDEX delivery_attempt_pkey ON ONLY public.T "
            "USING btree (id, attempted_at)",
            "CREATE INDEX ix_delivery_attempt_delivery_id ON ONLY public.T "
            "USING btree (delivery_id)",
            "CREATE INDEX ix_delivery_attempt_attempted_at ON ONLY public.T "
            "USING btree (attempted_at)",
        }
        assert conn.scalar(text("SELECT to_regclass('delivery_attempt_unpartitioned')")) is None

    migrate(scratch, "0009", down=True)
    with scratch.connect() as conn:
        assert fingerprint(conn) == before
        kind = conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'delivery_attempt'"))
        assert kind == "r"
        assert index_definitions(conn, "delivery_attempt") == plain_indexes
        leftovers = conn.scalars(
            text(
                "SELECT relname FROM pg_class "
                r"WHERE relname ~ '^delivery_attempt_(default|\d{8}|partitioned)$'"
            )
        ).all()
        assert leftovers == []

    migrate(scratch, "head")
    with scratch.connect() as conn:
        assert fingerprint(conn) == before


def test_alembic_run_on_its_own_reads_the_database_from_the_settings(scratch, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", scratch.url.render_as_string(hide_password=False))
    command.upgrade(alembic_config(), "head")  # no connection handed in: env.py makes its own
    with scratch.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None
        due = conn.execute(text("SELECT pg_get_indexdef('ix_delivery_due'::regclass)")).scalar()
    assert "next_attempt_at IS NOT NULL" in due
