"""bulk replays of the delivery log; one-time portal sign-in links and read-only sessions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_replay",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tenant_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("tenant.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("search", postgresql.JSONB(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("running", "done", name="replay_status", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("replayed", sa.Integer(), nullable=False),
        sa.Column("after_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "uq_delivery_replay_idempotency_key",
        "delivery_replay",
        ["tenant_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_delivery_replay_running",
        "delivery_replay",
        ["leased_until"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "portal_link",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tenant_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("tenant.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "api_key_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("api_key.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_portal_link_tenant_id", "portal_link", ["tenant_id"])
    op.create_index("ix_portal_link_api_key_id", "portal_link", ["api_key_id"])
    for column in ("read_only", "from_link"):
        op.add_column(
            "portal_session",
            sa.Column(column, sa.Boolean(), server_default=sa.text("false"), nullable=False),
        )


def downgrade() -> None:
    for column in ("from_link", "read_only"):
        op.drop_column("portal_session", column)
    op.drop_table("portal_link")
    op.drop_table("delivery_replay")
