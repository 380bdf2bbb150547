"""Portal sessions kept on the server, and each tenant's redirect origins

Signing out of the portal ends the session row, so a copied cookie stops working at once. A job's
redirect_url must now be on an origin the tenant listed; tenants that had callbacks are given
their callbacks' origins, which is what the old rule allowed, so nothing they use breaks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_session",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("api_key_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_key.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_portal_session_api_key_id", "portal_session", ["api_key_id"])
    op.add_column(
        "tenant",
        sa.Column(
            "redirect_origins",
            postgresql.ARRAY(sa.String(length=300)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.execute(
        """
        UPDATE tenant SET redirect_origins = origins.list
        FROM (
            SELECT tenant_id,
                   array_agg(DISTINCT lower(substring(url FROM '^(https?://[^/?#]+)'))) AS list
            FROM callback GROUP BY tenant_id
        ) AS origins
        WHERE origins.tenant_id = tenant.id
        """
    )


def downgrade() -> None:
    op.drop_column("tenant", "redirect_origins")
    op.drop_index("ix_portal_session_api_key_id", table_name="portal_session")
    op.drop_table("portal_session")
