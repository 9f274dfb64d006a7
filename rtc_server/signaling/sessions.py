"""The sessions API: what is live, how it is doing, and changing or ending it over HTTP.

- ``GET /sessions`` — every live stream whatever its source (``offer``, ``whip``, ``pull``):
  model, settings, frame counts, recent rates and latencies (``rtc_server/streams/stats.py``),
  subscribers, a session token and the URLs to follow it.
- ``PATCH /sessions/{id}`` — the fields of a ``config`` control message as JSON, validated
  by the same ``apply_config`` as the data channel; answered with the config ack.
- ``DELETE /sessions/{id}`` — end any session through ``Stream.close`` (the same path a
  peer hanging up, a timeout or ``DELETE /streams/{id}`` takes).
- ``POST /sessions/{id}/token`` — a fresh session token (``rtc_server/signaling/tokens.py``).
- ``GET /sessions/{id}/snapshot.jpg`` — the newest frame as JPEG, rate-limited per session.

Rights (``auth.py``): the list needs the operate right (``RTC_OPERATOR_TOKEN``; on a
loopback-only server without one, the publish rule). Every route of one session also takes
that session's own token — the publisher's, from ``/offer``'s answer — as ``?token=`` (what
an ``<img>`` can send) or as the bearer; another session's token gets 403.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from rtc_server.ratelimit import retry_after
from rtc_server.streams.control import MAX_CONTROL_BYTES, ControlError
from rtc_server.streams.sinks import Subscriber
from rtc_server.streams.snapshot import NoFrameYet, SnapshotRateLimited, UnsupportedFrame
from rtc_server.streams.stream import Stream

from .auth import require_operator, require_session_access
from .context import API, RATE_LIMITS, REGISTRY, SNAPSHOTS, TOKENS
from .errors import ClientError
from .events import setup_event_routes
from .limits import read_capped
from .tokens import SessionTokens

#: Largest PATCH body; a config message is well under 200 bytes.
MAX_PATCH_BYTES = MAX_CONTROL_BYTES  # zones and lines need more than the rest
PATCH_TYPES = frozenset({"application/json", "application/merge-patch+json"})


def _guard(request: web.Request) -> None:
    """The list: rate limit, then the operate right."""
    request.app[RATE_LIMITS].check("sessions", request)
    require_operator(request, request.app[API], request.app[TOKENS])


def _guard_session(request: web.Request) -> None:
    """One session's route: rate limit, then its own session token or the operate right."""
    request.app[RATE_LIMITS].check("sessions", request)
    require_session_access(request, request.app[API], request.app[TOKENS], request.match_info["id"])


def _stream(request: web.Request) -> Stream:
    session_id = request.match_info["id"]
    stream = request.app[REGISTRY].get(session_id)
    if stream is None:
        raise ClientError(404, "unknown_session", f"no live session {session_id}")
    return stream


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(stream: Stream, tokens: SessionTokens) -> dict[str, Any]:
    """One ``GET /sessions`` entry."""
    counts, th, stats = stream.counts, stream.settings.thresholds, stream.stats.summary()
    token, expires = tokens.issue(stream.id)
    base = f"/sessions/{stream.id}"
    # What the source says of itself, when it says anything (a pulled stream: its URL with
    # any password masked, its state): duck-typed, the Source protocol does not require it.
    describe_source = getattr(stream.source, "describe", None)
    return {
        "id": stream.id,
        "source": stream.source_kind,
        "source_info": describe_source() if callable(describe_source) else None,
        "model": stream.model_name,
        "created": _iso(stream.created_wall),
        "age_s": round(time.time() - stream.created_wall, 1),
        "settings": {"conf": th.conf, "iou": th.iou, "classes": sorted(th.classes) if th.classes else None,
                     "max_fps": stream.settings.max_fps, "tracking": stream.settings.tracking,
                     **stream.settings.shapes.to_dict(stream.class_names),
                     "webhooks": [w.shown() for w in stream.settings.webhooks]},
        "frames": {"received": counts.received, "processed": counts.processed, "dropped": counts.dropped},
        "rates": {"window_s": stats["window_s"], "received_fps": stats["received_fps"],
                  "processed_fps": stats["processed_fps"]},
        "latency": {"window_s": stats["window_s"], "server_ms_p50": stats["server_ms_p50"],
                    "e2e_ms_p50": stats["e2e_ms_p50"]},
        "subscribers": [s.describe() for s in stream.sinks if isinstance(s, Subscriber)],
        "token": token,
        "token_expires": expires,
        "urls": {"events": f"{base}/events", "ws": f"{base}/ws", "snapshot": f"{base}/snapshot.jpg"},
    }


async def list_sessions(request: web.Request) -> web.Response:
    _guard(request)
    tokens = request.app[TOKENS]
    streams = sorted((s for s in request.app[REGISTRY] if not s.closed), key=lambda s: s.created_wall)
    return web.json_response({"sessions": [describe(s, tokens) for s in streams]})


async def patch_session(request: web.Request) -> web.Response:
    """``PATCH /sessions/{id}`` with ``{"conf", "iou", "classes", "model", "max_fps"}`` (any
    subset; ``{}`` is a query) -> the config ack. Subscribers and the sender's data channel get
    the ack too."""
    _guard_session(request)
    stream = _stream(request)
    if request.content_type not in PATCH_TYPES:
        raise ClientError(415, "unsupported_media_type", "send the settings as application/json")
    try:
        body = json.loads((await read_capped(request, MAX_PATCH_BYTES)).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ClientError(400, "bad_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ClientError(400, "bad_config", "the body must be a JSON object of settings")
    if body.get("type", "config") != "config":
        raise ClientError(400, "bad_config", "'type', if given, must be \"config\"")
    try:
        ack = stream.configure(body)
    except ControlError as exc:
        raise ClientError(400, "bad_config", str(exc)) from exc
    return web.json_response(ack)


async def delete_session(request: web.Request) -> web.Response:
    """``DELETE /sessions/{id}`` -> 204 once the session is closed (its source stopped, its
    subscribers told, its slot free)."""
    _guard_session(request)
    stream = _stream(request)
    await stream.close("deleted")
    return web.Response(status=204)


async def new_token(request: web.Request) -> web.Response:
    _guard_session(request)
    stream = _stream(request)
    token, expires = request.app[TOKENS].issue(stream.id)
    return web.json_response({"token": token, "expires": expires})


async def snapshot(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    app = request.app
    config = app[API]
    require_session_access(request, config, app[TOKENS], session_id)
    stream = _stream(request)
    if config.snapshot_rate <= 0:
        raise ClientError(404, "snapshots_disabled", "snapshots are off on this server (RTC_SNAPSHOT_RATE=0)")
    try:
        shot = await app[SNAPSHOTS].jpeg(stream)
    except NoFrameYet as exc:
        raise ClientError(503, "no_frame_yet", str(exc), {"Retry-After": "1"}) from exc
    except SnapshotRateLimited as exc:
        raise ClientError(429, "rate_limited", f"at most {config.snapshot_rate:g} snapshots per second "
                          f"per session; retry in {exc.retry_after:.2f} s",
                          {"Retry-After": retry_after(exc.retry_after)}) from exc
    except UnsupportedFrame as exc:
        raise ClientError(501, "unsupported_frame", str(exc)) from exc
    return web.Response(body=shot.jpeg, content_type="image/jpeg", headers={
        "Cache-Control": "no-store", "X-Frame-Id": str(shot.frame_id),
        "X-Frame-Size": f"{shot.width}x{shot.height}",
    })


def setup_session_routes(app: web.Application) -> None:
    """The routes, on the session tokens and snapshot encoder the root made (``TOKENS``,
    ``SNAPSHOTS``; the root also shuts the encoder's threads down)."""
    app.router.add_get("/sessions", list_sessions)
    app.router.add_patch("/sessions/{id}", patch_session)
    app.router.add_delete("/sessions/{id}", delete_session)
    app.router.add_post("/sessions/{id}/token", new_token)
    app.router.add_get("/sessions/{id}/snapshot.jpg", snapshot)
    setup_event_routes(app)
