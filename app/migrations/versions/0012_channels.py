"""channels: the ones a published event carries, and the ones a callback listens on (none: all)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty on every existing row: job events carry no channel, callbacks listen on all.
    for table in ("message", "callback"):
        op.add_column(
            table,
            sa.Column(
                "channels",
                postgresql.ARRAY(sa.String(128)),
                nullable=False,
                server_default=sa.text("'{}'"),
            ),
        )


def downgrade() -> None:
    for table in ("callback", "message"):
        op.drop_column(table, "channels")
