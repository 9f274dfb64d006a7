"""Drop the ``webhooks`` table: a stream's webhooks live in its spec (``streams.spec``), the
one place that brings them back with the stream; the table was never written by the server.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_webhooks_stream_id", table_name="webhooks")
    op.drop_table("webhooks")


def downgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(64)),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("event_types", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], ondelete="CASCADE",
                                name="fk_webhooks_stream_id_streams"),
    )
    op.create_index("ix_webhooks_stream_id", "webhooks", ["stream_id"])
