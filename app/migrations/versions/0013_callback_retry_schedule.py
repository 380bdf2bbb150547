"""a callback's own retry schedule, in place of BOOMERANG_RETRY_SCHEDULE

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: the service's schedule, as every existing callback has had.
    op.add_column(
        "callback", sa.Column("retry_schedule", postgresql.ARRAY(sa.Integer()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("callback", "retry_schedule")
