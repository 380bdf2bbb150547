"""the attempt log partitioned by day, so retention drops days instead of deleting rows

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

The copy runs in this migration's one transaction, with the old table locked: on a large log,
plan a maintenance window (or prune it first).
"""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Today and this many days after it get a partition now; the prune task keeps that lead.
DAYS_AHEAD = 3

COLUMNS = (
    "id, delivery_id, attempted_at, request_headers, response_status, response_headers, "
    "response_body, response_body_truncated, duration_ms, succeeded, error, created_at"
)


def _columns() -> list[Any]:
    # The log's columns and key to the delivery, as 0001 made them; both directions use them.
    return [
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("response_body_truncated", sa.Boolean(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["delivery.id"],
            name="delivery_attempt_delivery_id_fkey",
            ondelete="CASCADE",
        ),
    ]


def _create_indexes() -> None:
    # On a partitioned table these are partitioned indexes: every partition gets its own.
    op.create_index("ix_delivery_attempt_delivery_id", "delivery_attempt", ["delivery_id"])
    op.create_index("ix_delivery_attempt_attempted_at", "delivery_attempt", ["attempted_at"])


def _set_aside(table: str) -> None:
    """Rename ``delivery_attempt`` and the names it holds (index names are schema-wide)."""
    op.rename_table("delivery_attempt", table)
    for index in ("ix_delivery_attempt_delivery_id", "ix_delivery_attempt_attempted_at"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index.replace('delivery_attempt', table)}")
    op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT delivery_attempt_pkey TO {table}_pkey")


def upgrade() -> None:
    _set_aside("delivery_attempt_unpartitioned")
    op.create_table(
        "delivery_attempt",
        *_columns(),
        sa.PrimaryKeyConstraint("id", "attempted_at", name="delivery_attempt_pkey"),
        postgresql_partition_by="RANGE (attempted_at)",
    )
    _create_indexes()
    op.execute("CREATE TABLE delivery_attempt_default PARTITION OF delivery_attempt DEFAULT")
    # One partition per UTC day that holds rows, and today and the days ahead. Days past
    # retention get theirs too: the next prune drops them whole.
    days = op.get_bind().scalars(
        sa.text(
            "SELECT DISTINCT date_trunc('day', attempted_at AT TIME ZONE 'UTC')::date "
            "FROM delivery_attempt_unpartitioned "
            "UNION SELECT (now() AT TIME ZONE 'UTC')::date + ahead "
            "FROM generate_series(0, :ahead) AS ahead"
        ),
        {"ahead": DAYS_AHEAD},
    )
    for day in sorted(days):
        op.execute(
            f"CREATE TABLE delivery_attempt_{day:%Y%m%d} PARTITION OF delivery_attempt "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') "
            f"TO ('{(day + timedelta(days=1)).isoformat()} 00:00+00')"
        )
    op.execute(
        f"INSERT INTO delivery_attempt ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM delivery_attempt_unpartitioned"
    )
    op.drop_table("delivery_attempt_unpartitioned")


def downgrade() -> None:
    _set_aside("delivery_attempt_partitioned")
    op.create_table(
        "delivery_attempt",
        *_columns(),
        sa.PrimaryKeyConstraint("id", name="delivery_attempt_pkey"),
    )
    _create_indexes()
    op.execute(
        f"INSERT INTO delivery_attempt ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM delivery_attempt_partitioned"
    )
    # Its partitions go with it.
    op.drop_table("delivery_attempt_partitioned")
