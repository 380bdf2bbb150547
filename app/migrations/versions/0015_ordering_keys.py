"""ordered delivery per key: a message's ordering key, copied onto its deliveries with its place

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A delivery's lane: its callback, or the URL of an ad-hoc one (workers/delivery/store.lane_of).
LANE = "coalesce(callback_id::text, url)"


def upgrade() -> None:
    op.add_column("message", sa.Column("ordering_key", sa.String(255), nullable=True))
    op.add_column("delivery", sa.Column("ordering_key", sa.String(255), nullable=True))
    op.add_column("delivery", sa.Column("ordering_seq", sa.BigInteger(), nullable=True))
    op.add_column(
        "delivery",
        sa.Column("preceding_failed", postgresql.ARRAY(postgresql.UUID()), nullable=True),
    )
    # A key's history at one lane, newest first: is the latest still on its way (then a new
    # event waits behind it), and which earlier ones were given up on.
    op.create_index(
        "ix_delivery_ordering",
        "delivery",
        [sa.text(LANE), "ordering_key", "ordering_seq"],
        postgresql_where=sa.text("ordering_key IS NOT NULL"),
    )
    # What is still on its way per key and lane: the claim's "nothing earlier is pending" probe
    # stays small however long a key's history grows.
    op.create_index(
        "ix_delivery_ordering_pending",
        "delivery",
        [sa.text(LANE), "ordering_key", "ordering_seq"],
        postgresql_where=sa.text("ordering_key IS NOT NULL AND status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_ordering_pending", table_name="delivery")
    op.drop_index("ix_delivery_ordering", table_name="delivery")
    op.drop_column("delivery", "preceding_failed")
    op.drop_column("delivery", "ordering_seq")
    op.drop_column("delivery", "ordering_key")
    op.drop_column("message", "ordering_key")
