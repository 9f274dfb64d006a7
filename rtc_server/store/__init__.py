"""Durable state behind SQLAlchemy: pull streams (their webhooks in their spec), events, the
replicas and the directory of sessions, and the lease rows (``rtc_server/cluster/leases.py`` runs the lease
protocol on them). SQLite under the data directory by default, PostgreSQL for replicas;
Alembic migrations at start under a lock. Nothing is written per frame.

The composition root builds a ``StoreConfig`` from ``Settings`` and calls ``open_store``;
nothing here reads ``config``. docs/store.md has the schema and the protocols.
"""

from .config import StoreConfig
from .errors import StoreConfigError, StoreConflict, StoreError, StoreUnavailable
from .records import (
    EventPage,
    EventRecord,
    EventToAdd,
    NewEvent,
    ReplicaRecord,
    SessionKind,
    SessionRecord,
    StreamRecord,
)
from .store import Store, open_store

__all__ = [
    "EventPage", "EventRecord", "EventToAdd", "NewEvent", "ReplicaRecord", "SessionKind", "SessionRecord",
    "Store", "StoreConfig", "StoreConfigError", "StoreConflict", "StoreError", "StoreUnavailable",
    "StreamRecord", "open_store",
]
