"""The tables, in SQLAlchemy Core: the one description of the schema that the migrations
(``migrations/versions``) create and the queries use.

Nothing here is written per frame: a stream's spec (its webhooks included) when it is
created or changed, its events (line and zone crossings, not detections, in batches), the
directory of sessions when one starts or ends, one heartbeat row per replica, and one lease
row per pull stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: Named constraints, so that migrations (and SQLite's batch mode) can refer to them.
metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on both databases.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so it stores naive UTC text
    (which sorts and compares correctly as text) and we attach UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store takes aware datetimes only (datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A BIGINT primary key that SQLite still auto-increments (SQLite does that for INTEGER only).
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Pull streams: what ``POST /streams`` was given (source, model, settings, zones, lines),
#: kept across restarts with the same id.
streams = Table(
    "streams", metadata,
    Column("id", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: The event history (line and zone crossings...). No foreign key to ``streams``: the history
#: of a deleted stream stays until retention prunes it. ``id`` orders the pages.
events = Table(
    "events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("stream_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    Index("ix_events_time", "time"),
    Index("ix_events_stream_id_id", "stream_id", "id"),
)

#: The replicas alive: one row each, its heartbeat written every few seconds. A replica is
#: alive while ``heartbeat_at`` is younger than the lease time; the fair share of streams
#: counts these.
replicas = Table(
    "replicas", metadata,
    Column("id", String(128), primary_key=True),
    Column("internal_url", Text, nullable=True),
    Column("capacity", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

#: The live directory: every session of every kind and the replica that owns it. A session is
#: live while its owner's heartbeat is (one heartbeat per replica, not one write per session).
sessions = Table(
    "sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("replica_id", String(128), nullable=False),
    Column("owner_url", Text, nullable=True),
    Column("stream_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_sessions_replica_id", "replica_id"),
)

#: One lease per pull stream (created with it): who runs it, until when, and an epoch that
#: grows on every change of hands (a fencing token: work stamped with an older epoch is stale).
leases = Table(
    "leases", metadata,
    Column("stream_id", String(64), ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True),
    Column("owner", String(128), nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("epoch", BigInteger, nullable=False, default=0),
    Index("ix_leases_owner", "owner"),
)

#: The session kinds the directory knows.
SESSION_KINDS = ("offer", "whip", "pull")
