"""a callback's content filter: a CEL expression its events must pass

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("callback", sa.Column("filter", sa.Text(), nullable=True))
    # Every event looks up its tenant's filtered callbacks: most tenants have none.
    op.create_index(
        "ix_callback_tenant_filtered",
        "callback",
        ["tenant_id"],
        postgresql_where=sa.text("filter IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_callback_tenant_filtered", table_name="callback")
    op.drop_column("callback", "filter")
