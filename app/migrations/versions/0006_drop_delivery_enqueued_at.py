"""delivery.enqueued_at is gone: delivery wakes carry no id, so nothing reads when one was sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("delivery", "enqueued_at")


def downgrade() -> None:
    op.add_column("delivery", sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
