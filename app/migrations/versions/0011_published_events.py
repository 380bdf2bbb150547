"""events tenants publish: the publisher's own id on a message (unique per tenant) with a digest of
what was published under it, the catalogue of event types, and whether a tenant may publish
types missing from it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL on every existing message: only published events carry an id of the publisher's.
    op.add_column("message", sa.Column("event_id", sa.String(255), nullable=True))
    op.add_column("message", sa.Column("request_digest", sa.String(64), nullable=True))
    op.create_index(
        "uq_message_tenant_event_id",
        "message",
        ["tenant_id", "event_id"],
        unique=True,
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )
    op.create_table(
        "event_type",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tenant_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("tenant.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("schema", postgresql.JSONB(), nullable=True),
        sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("tenant_id", "name", name="uq_event_type_tenant_name"),
    )
    op.add_column(
        "tenant",
        sa.Column(
            "allow_uncatalogued_event_types",
            sa.Boolean(),
            nullable=False,
            server_default=sa.text("false"),
        ),
    )


def downgrade() -> None:
    op.drop_column("tenant", "allow_uncatalogued_event_types")
    op.drop_table("event_type")
    op.drop_index("uq_message_tenant_event_id", table_name="message")
    op.drop_column("message", "request_digest")
    op.drop_column("message", "event_id")
