"""callback payload format with a pinned version, and the failing-incident marker

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing callbacks get what they have always been sent: the envelope, version 1.
    op.add_column(
        "callback",
        sa.Column("format", sa.String(length=32), server_default="envelope", nullable=False),
    )
    op.add_column(
        "callback", sa.Column("format_version", sa.Integer(), server_default="1", nullable=False)
    )
    op.add_column(
        "callback", sa.Column("failing_reported_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("callback", "failing_reported_at")
    op.drop_column("callback", "format_version")
    op.drop_column("callback", "format")
