"""Prepared statements on real Postgres: prepared once per connection, typed arguments, literal
percent signs kept, and a generic plan used from the first call."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from app.prepared import PreparedStatement

MATCHING = PreparedStatement(
    "test_matching_ids",
    text(
        """
        SELECT id, :label AS label
        FROM unnest(CAST(:ids AS uuid[])) AS id
        WHERE :pattern LIKE '%.*' OR id = :first
        """
    ),
)


def prepared_here(connection) -> list[str]:
    return list(connection.scalars(text("SELECT name FROM pg_prepared_statements ORDER BY name")))


def test_it_is_prepared_once_per_connection_and_answers_like_the_text(engine):
    ids = [uuid.uuid4(), uuid.uuid4()]
    with engine.connect() as connection:
        assert "test_matching_ids" not in prepared_here(connection)
        first = MATCHING.execute(
            connection, {"ids": ids, "label": "a", "pattern": "invoice.*", "first": ids[0]}
        ).all()
        # A list arrives as text[] and is cast to the uuid[] Postgres inferred; the LIKE
        # pattern's % reached Postgres as it is written.
        assert [(row.id, row.label) for row in first] == [(ids[0], "a"), (ids[1], "a")]
        again = MATCHING.execute(
            connection, {"ids": ids, "label": "b", "pattern": "invoice", "first": ids[1]}
        ).all()
        assert [(row.id, row.label) for row in again] == [(ids[1], "b")]
        assert prepared_here(connection).count("test_matching_ids") == 1
        plans = connection.execute(
            text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE name = 'test_matching_ids'"
            )
        ).one()
        assert (plans.generic_plans, plans.custom_plans) == (2, 0)  # planned once, not per call
        connection.rollback()
        # Prepared statements outlive a rolled-back transaction, as the record of them does.
        assert (
            MATCHING.execute(
                connection, {"ids": [], "label": "c", "pattern": "x", "first": None}
            ).all()
            == []
        )


def test_a_new_database_connection_prepares_it_again(engine):
    with engine.connect() as connection:
        MATCHING.execute(connection, {"ids": [], "label": "", "pattern": "", "first": None})
        connection.invalidate()  # the pool replaces the database connection
    with engine.connect() as connection:
        assert (
            MATCHING.execute(
                connection, {"ids": [], "label": "", "pattern": "a.*", "first": None}
            ).all()
            == []
        )
