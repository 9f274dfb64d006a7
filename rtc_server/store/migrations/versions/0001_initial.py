"""The first schema: pull streams, webhooks, events, replicas, the session directory, leases.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.String(64)),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_streams"),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(64)),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("event_types", sa.JSON, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], ondelete="CASCADE",
                                name="fk_webhooks_stream_id_streams"),
    )
    op.create_index("ix_webhooks_stream_id", "webhooks", ["stream_id"])
    op.create_table(
        "events",
        sa.Column("id", _BIGID, autoincrement=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_time", "events", ["time"])
    op.create_index("ix_events_stream_id_id", "events", ["stream_id", "id"])
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(128)),
        sa.Column("internal_url", sa.Text, nullable=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("heartbeat_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replicas"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("replica_id", sa.String(128), nullable=False),
        sa.Column("owner_url", sa.Text, nullable=True),
        sa.Column("stream_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_replica_id", "sessions", ["replica_id"])
    op.create_table(
        "leases",
        sa.Column("stream_id", sa.String(64)),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", name="pk_leases"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], ondelete="CASCADE",
                                name="fk_leases_stream_id_streams"),
    )
    op.create_index("ix_leases_owner", "leases", ["owner"])


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("sessions")
    op.drop_table("replicas")
    op.drop_table("events")
    op.drop_table("webhooks")
    op.drop_table("streams")
