"""``GET /events``: the event history (issue 22) — every stream's line and zone events as the
store keeps them, paginated, from any replica (it reads the shared database: nothing is
forwarded).

``GET /events?stream=&type=&since=&limit=&cursor=`` → ``{"events": [...], "next": cursor or
null}``, oldest first (the store's insertion order); pass ``next`` back as ``cursor`` for the
next page. ``since``: ISO-8601 (a time without a zone is UTC) or unix seconds; ``limit``
1..1000 (100 by default); ``type``: ``line_cross``, ``zone_enter`` or ``zone_exit``.

Rights (``auth.py``): with ``stream``, that stream's own session token (``?token=`` or the
bearer) or the operate right, as for its SSE; without, the operate right (every stream's
events). A database that does not answer is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from rtc_server.store.errors import StoreUnavailable
from rtc_server.store.records import EventPage, EventRecord

from .auth import require_operator, require_session_access
from .context import API, RATE_LIMITS, TOKENS
from .durable import STORE_RETRY_AFTER
from .errors import ClientError

#: The event types the history keeps (``docs/tracking.md``).
EVENT_TYPES = ("line_cross", "zone_enter", "zone_exit")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Longest stream id accepted (ids are at most 64 characters; a session's up to 128).
MAX_STREAM_ID = 128


class EventReader(Protocol):
    """What the root hands in: one page of the store's event history."""

    async def __call__(self, *, stream: str | None, type: str | None, since: datetime | None,  # noqa: A002
                       limit: int, cursor: str | None) -> EventPage: ...


EVENT_HISTORY: web.AppKey[EventReader] = web.AppKey("event_history")


def _bad(detail: str) -> ClientError:
    return ClientError(400, "bad_query", detail)


def parse_since(value: str) -> datetime:
    """``since`` as an aware UTC datetime: unix seconds or ISO-8601; ``ClientError`` 400."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise _bad("since must be a finite number of unix seconds or an ISO-8601 time")
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise _bad(f"since {value!r} is out of range") from exc
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _bad(f"since {value!r} is neither unix seconds nor an ISO-8601 time "
                   "(e.g. 2026-12-07T10:00:00Z)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError as exc:
        raise _bad(f"limit must be an integer 1..{MAX_LIMIT}") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit must be 1..{MAX_LIMIT}, not {limit}")
    return limit


def event_view(record: EventRecord) -> dict[str, Any]:
    """One event as ``GET /events`` shows it: the row, ``payload`` the event message as the
    stream's sinks and webhooks got it."""
    return {"id": record.id, "stream_id": record.stream_id, "type": record.type,
            "time": record.time.isoformat().replace("+00:00", "Z"), "payload": record.payload}


async def list_events(request: web.Request) -> web.Response:
    app = request.app
    app[RATE_LIMITS].check("events", request)
    query = request.query
    stream = query.get("stream")
    if stream is not None and not 1 <= len(stream) <= MAX_STREAM_ID:
        raise _bad(f"stream must be a stream id of 1..{MAX_STREAM_ID} characters")
    if stream is None:
        require_operator(request, app[API], app[TOKENS])
    else:
        require_session_access(request, app[API], app[TOKENS], stream)
    kind = query.get("type")
    if kind is not None and kind not in EVENT_TYPES:
        raise _bad(f"type must be one of {', '.join(EVENT_TYPES)}")
    since = parse_since(query["since"]) if "since" in query else None
    limit = parse_limit(query.get("limit"))
    cursor = query.get("cursor") or None
    reader = app.get(EVENT_HISTORY)
    if reader is None:
        raise ClientError(404, "no_history", "this server keeps no event history")
    try:
        page = await reader(stream=stream, type=kind, since=since, limit=limit, cursor=cursor)
    except StoreUnavailable as exc:
        raise ClientError(503, "store_unavailable", f"the database did not answer: {exc}",
                          {"Retry-After": str(STORE_RETRY_AFTER)}) from exc
    except ValueError as exc:  # a cursor this listing did not issue
        raise ClientError(400, "bad_cursor", f"cursor: {exc}; pass back the 'next' of a previous page") from exc
    return web.json_response({"events": [event_view(e) for e in page.events], "next": page.next_cursor})


def setup_history_routes(app: web.Application) -> None:
    app.router.add_get("/events", list_events)
