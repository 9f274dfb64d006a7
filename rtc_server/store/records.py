"""What the store hands back: plain frozen records, no SQLAlchemy objects, so the callers
(the HTTP face, the cluster) never hold a connection or a lazy attribute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

SessionKind = Literal["offer", "whip", "pull"]


@dataclass(frozen=True)
class StreamRecord:
    """A pull stream as ``POST /streams`` defined it; ``spec`` is its JSON (source, model,
    settings, zones, lines), kept as given."""

    id: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EventRecord:
    """One event of the history; ``id`` grows with insertion and orders the pages."""

    id: int
    stream_id: str
    type: str
    time: datetime
    payload: dict[str, Any]


class EventToAdd(Protocol):
    """What ``Store.add_events`` reads of an event to append: any object with these four
    attributes (``NewEvent``; the event history's own ``HistoryEvent``, handed over as it
    is, since the outputs layer imports nothing of the store)."""

    @property
    def stream_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def payload(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class NewEvent:
    """An event to append (the store assigns its id)."""

    stream_id: str
    type: str
    time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class EventPage:
    """One page of ``list_events``; ``next_cursor`` None: this was the last page."""

    events: list[EventRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class ReplicaRecord:
    """A replica's heartbeat row."""

    id: str
    internal_url: str | None
    capacity: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    """A session in the live directory and where it runs: ``owner_url`` is the owner
    replica's internal URL (None for one process without ``RTC_INTERNAL_URL``)."""

    id: str
    kind: SessionKind
    replica_id: str
    owner_url: str | None
    stream_id: str | None
    created_at: datetime
