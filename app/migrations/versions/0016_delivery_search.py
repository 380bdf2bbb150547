"""searching the delivery log: newest first per tenant and per callback, messages by type

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Newest first, as every list pages (a btree read backwards): the walk stops after a page
    # instead of sorting all of a tenant's (or callback's) deliveries. They replace the
    # single-column indexes they start with.
    op.create_index(
        "ix_delivery_tenant_newest",
        "delivery",
        ["tenant_id", "created_at", "id"],
    )
    op.drop_index("ix_delivery_tenant_id", table_name="delivery")
    op.create_index(
        "ix_delivery_callback_newest",
        "delivery",
        ["callback_id", "created_at", "id"],
    )
    op.drop_index("ix_delivery_callback_id", table_name="delivery")
    # A type, or a prefix.* (LIKE 'prefix.%', hence the pattern operator class).
    op.create_index(
        "ix_message_tenant_type",
        "message",
        ["tenant_id", "event_type"],
        postgresql_ops={"event_type": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_message_tenant_type", table_name="message")
    op.create_index("ix_delivery_callback_id", "delivery", ["callback_id"])
    op.drop_index("ix_delivery_callback_newest", table_name="delivery")
    op.create_index("ix_delivery_tenant_id", "delivery", ["tenant_id"])
    op.drop_index("ix_delivery_tenant_newest", table_name="delivery")
