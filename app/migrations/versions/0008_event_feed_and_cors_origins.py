"""An ordered event feed, and each tenant's CORS origins for streams

Each message records the transaction that wrote it (``txid``, an xid8) and its place in that
transaction (``seq``). A feed reads messages in (txid, seq) order, only below the oldest
transaction still running, so a cursor never skips a message that commits late. A tenant's
``cors_origins`` are the web origins whose pages may read its streams.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE message ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()")
    op.add_column(
        "message",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
    )
    op.create_index("ix_message_tenant_feed", "message", ["tenant_id", "txid", "seq"])
    op.add_column(
        "tenant",
        sa.Column(
            "cors_origins",
            postgresql.ARRAY(sa.String(length=300)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("tenant", "cors_origins")
    op.drop_index("ix_message_tenant_feed", table_name="message")
    op.drop_column("message", "seq")
    op.drop_column("message", "txid")
