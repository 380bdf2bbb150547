"""the W3C trace context of a job and of a message, for tracing across processes

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("job", "message")


def upgrade() -> None:
    # Nullable without a default: Postgres changes only the catalogue, so even a large job or
    # message table is not rewritten, and its lock is held for a moment.
    for table in TABLES:
        op.add_column(table, sa.Column("traceparent", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "traceparent")
