"""``/streams``: pull sources over HTTP — start one, list them, look at one, end one.

- ``POST /streams`` ``{"url", "loop"?, "conf"?, "iou"?, "classes"?, "model"?, "max_fps"?}`` →
  ``201 {"id", ...}`` with ``Location: /streams/{id}`` once the source has opened; 400 for
  a URL the SSRF policy refuses (saying why) or a bad body, 422 when the source cannot be
  opened (unreachable, no video, ...), 503 at ``max_sessions``.
- ``GET /streams`` → ``{"streams": [...]}``, ``GET /streams/{id}`` → one of them.
- ``DELETE /streams/{id}`` → 204; the stream ends through its one close path.

Every route needs the operate right (``auth.py``: ``RTC_OPERATOR_TOKEN``; on a loopback-only
server without one, the publish rule): a pull spends the server's egress and inference on
a URL of the caller's choosing, which no publisher may do. ``POST`` is rate limited like ``/offer``. The id is a
stream id like any session's: the other consumers (events, snapshots, the sessions list)
take it as it is.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from rtc_server.ingest.policy import UrlRefused
from rtc_server.ingest.source import PullSource, SourceOpenError, open_pull_stream
from rtc_server.ingest.spec import PullSpecError, parse_pull_spec
from rtc_server.ratelimit import client_key
from rtc_server.streams.control import ControlError
from rtc_server.streams.stream import Stream

from .auth import require_operator
from .context import API, INFERENCE, QUOTAS, RATE_LIMITS, REGISTRY, TOKENS
from .durable import forget_stream, keep_stream
from .errors import ClientError
from .limits import read_capped
from .refusals import capacity_refusals

#: Largest ``POST /streams`` body; a URL is at most 4 KiB.
MAX_STREAM_BODY_BYTES = 16 * 1024


def _guard(request: web.Request, *, costly: bool = False) -> None:
    """The operate right on every route; the rate limit on the one that starts work (``POST``)."""
    if costly:
        request.app[RATE_LIMITS].check("streams", request)
    require_operator(request, request.app[API], request.app[TOKENS])


def _pull_stream(request: web.Request) -> tuple[Stream, PullSource]:
    stream_id = request.match_info["id"]
    stream = request.app[REGISTRY].get(stream_id)
    if stream is None or not isinstance(stream.source, PullSource):
        raise ClientError(404, "unknown_stream", f"no live pull stream {stream_id}")
    return stream, stream.source


def stream_view(stream: Stream, source: PullSource) -> dict[str, Any]:
    settings = stream.settings
    counts = stream.counts
    return {
        "id": stream.id, "source": stream.source_kind, **source.describe(),
        "model": settings.model, "max_fps": settings.max_fps, "tracking": settings.tracking,
        **settings.shapes.to_dict(stream.class_names), "webhooks": [w.shown() for w in settings.webhooks],
        "counts": {"received": counts.received, "processed": counts.processed, "dropped": counts.dropped},
    }


async def create_stream(request: web.Request) -> web.Response:
    _guard(request, costly=True)
    if request.content_type != "application/json":
        raise ClientError(415, "unsupported_media_type", "send the stream as application/json")
    try:
        body = json.loads((await read_capped(request, MAX_STREAM_BODY_BYTES)).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ClientError(400, "bad_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ClientError(400, "bad_stream", "the body must be a JSON object with a 'url'")
    inference = request.app[INFERENCE]
    try:
        registry = request.app[REGISTRY]
        spec = parse_pull_spec(body, inference.models.names, registry.class_names)
        registry.check_settings(spec.settings(registry.defaults(), registry.class_names))
    except (PullSpecError, ControlError) as exc:
        raise ClientError(400, "bad_stream", str(exc)) from exc
    if not inference.ready:
        raise ClientError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "2"})
    try:
        with request.app[QUOTAS].hold("pulls", client_key(request.remote)) as slot, capacity_refusals():
            stream = await open_pull_stream(request.app[REGISTRY], request.app[API].pull, spec)
            slot.bind(stream.id)
    except UrlRefused as exc:
        raise ClientError(400, "url_refused", exc.detail) from exc
    except SourceOpenError as exc:
        raise ClientError(422, "source_unavailable", f"the source could not be opened ({exc.kind}): "
                          f"{exc.detail}") from exc
    assert isinstance(stream.source, PullSource)
    try:
        await keep_stream(request, stream.id, spec.to_dict())  # durable (issue 22): back after a restart
    except ClientError:
        await stream.close("not kept")
        raise
    location = f"/streams/{stream.id}"
    return web.json_response(stream_view(stream, stream.source), status=201, headers={"Location": location})


async def list_streams(request: web.Request) -> web.Response:
    _guard(request)
    views = [stream_view(s, s.source) for s in request.app[REGISTRY] if isinstance(s.source, PullSource)]
    return web.json_response({"streams": views})


async def get_stream(request: web.Request) -> web.Response:
    _guard(request)
    return web.json_response(stream_view(*_pull_stream(request)))


async def delete_stream(request: web.Request) -> web.Response:
    _guard(request)
    forgotten = await forget_stream(request, request.match_info["id"])  # its owner, on any replica, stops it
    if forgotten and not isinstance(getattr(request.app[REGISTRY].get(request.match_info["id"]), "source", None),
                                    PullSource):
        return web.Response(status=204)
    stream, _ = _pull_stream(request)
    await stream.close("deleted")
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/streams", create_stream)
    app.router.add_get("/streams", list_streams)
    app.router.add_get("/streams/{id}", get_stream)
    app.router.add_delete("/streams/{id}", delete_stream)
