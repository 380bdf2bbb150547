"""a callback's own fleet-wide limits: concurrency cap and rate

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: the service's defaults, as every existing callback has had.
    op.add_column("callback", sa.Column("max_concurrency", sa.Integer(), nullable=True))
    op.add_column("callback", sa.Column("rate_limit_per_second", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("callback", "rate_limit_per_second")
    op.drop_column("callback", "max_concurrency")
