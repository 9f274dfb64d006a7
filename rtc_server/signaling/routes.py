"""The HTTP surface. Handlers validate input, then call the session registry or the
scheduler through their public methods — nothing here touches aiortc internals
or onnxruntime.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from rtc_server.engine.images import ChecksBusy, EncodedImage, ImageDecodeError, ImageSizeError
from rtc_server.engine.scheduler import Abandoned, Overloaded, SchedulerClosed
from rtc_server.metrics import CONTENT_TYPE
from rtc_server.ratelimit import client_key
from rtc_server.streams.control import ControlError, apply_config
from rtc_server.streams.messages import detection_message
from rtc_server.webrtc.peer import answer_offer
from rtc_server.webrtc.turn import ice_servers as ice_servers_for

from .auth import has_publish_token, require_operator, require_publish
from .context import API, IMAGE_CHECKS, INFERENCE, QUOTAS, RATE_LIMITS, REGISTRY, TOKENS
from .errors import ClientError
from .history import setup_history_routes
from .limits import MAX_OFFER_BYTES, read_capped
from .models import check_model, list_models
from .offers import parse_offer
from .refusals import answer_refusals
from .sessions import setup_session_routes
from .streams import add_routes as add_stream_routes
from .whip import setup_whip

IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})


def _guard(request: web.Request, route: str) -> None:
    """Rate limit first (cheapest, and it also slows token guessing), then the publish right."""
    request.app[RATE_LIMITS].check(route, request)
    require_publish(request, request.app[API])


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ClientError(415, "unsupported_media_type", "send the offer as application/json")
    try:
        body = json.loads((await read_capped(request, MAX_OFFER_BYTES)).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ClientError(400, "bad_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ClientError(400, "bad_offer", "the body must be a JSON object")
    return body


#: ``Retry-After`` while the models warm up (a few seconds at most on a CPU).
NOT_READY_RETRY = {"Retry-After": "2"}


def _require_ready(request: web.Request) -> None:
    if not request.app[INFERENCE].ready:
        raise ClientError(503, "not_ready", "the model is still loading; retry shortly", NOT_READY_RETRY)


async def offer(request: web.Request) -> web.Response:
    """``{"sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer", "session_id"}``.

    A second offer for a live session (renegotiation) is said with ``"session_id"`` in
    the body; it is not supported: 409 while that session is live, 404 once it is gone.
    """
    _guard(request, "offer")
    offer_ = parse_offer(await _json_body(request))
    registry = request.app[REGISTRY]
    if offer_.session_id is not None:
        if registry.get(offer_.session_id) is not None:
            raise ClientError(409, "session_exists", f"session {offer_.session_id} is live and cannot be "
                              "renegotiated; close it, then offer again without 'session_id'")
        raise ClientError(404, "unknown_session", f"no live session {offer_.session_id}; "
                          "offer again without 'session_id'")
    model = check_model(request.app[INFERENCE].models, offer_.model)
    _require_ready(request)
    try:  # tracking, zones, lines: as a config message sets them (bad geometry says why)
        start = registry.check_settings(apply_config(replace(registry.defaults(), model=model, max_fps=offer_.max_fps),
                                                     dict(offer_.analytics), (), registry.class_names))
    except ControlError as exc:
        raise ClientError(400, "bad_offer", str(exc)) from exc
    with request.app[QUOTAS].hold("sessions", client_key(request.remote)) as slot, answer_refusals():
        stream, answer = await answer_offer(registry, request.app[API].peer, offer_.sdp, stream_settings=start)
        slot.bind(stream.id)
    token, expires = request.app[TOKENS].issue(stream.id)  # for ?token= on events/ws/snapshot
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": stream.id,
                              "token": token, "token_expires": expires})


def _overloaded(exc: Overloaded | SchedulerClosed) -> ClientError:
    retry_after = exc.retry_after if isinstance(exc, Overloaded) else 5
    return ClientError(503, "overloaded", str(exc), {"Retry-After": str(retry_after)})


def _client_connected(request: web.Request) -> bool:
    """Whether the client is still there to read an answer (checked before its image runs)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def predict(request: web.Request) -> web.Response:
    """JPEG/PNG body -> the detection message for that image; ``?model=NAME`` picks the model.

    Admission is the scheduler's: ``/predict`` has one share of the workers beside the live
    streams and a bounded queue. A full queue is a 503 ``overloaded`` with ``Retry-After``
    at once, before the body is even read; so is a request that waited
    ``RTC_PREDICT_MAX_WAIT`` seconds, and one that finds every image-check slot taken (the
    header check of a large body runs off the loop, under a bound). A request whose client
    has hung up is not run.
    """
    received_at = time.perf_counter()
    _guard(request, "predict")
    if request.content_type not in IMAGE_TYPES:
        raise ClientError(415, "unsupported_media_type", "send image/jpeg or image/png")
    scheduler = request.app[INFERENCE]
    model = check_model(scheduler.models, request.query.get("model"))
    _require_ready(request)
    try:
        scheduler.check_predict_room()  # a cheap refusal: nothing read, nothing decoded
    except Overloaded as exc:
        raise _overloaded(exc) from exc
    config = request.app[API]
    data = await read_capped(request, config.max_body_bytes)
    try:  # off the loop for a large body, under a bound (engine/images.py)
        width, height = await request.app[IMAGE_CHECKS].check(data, config.max_image_pixels)
    except ChecksBusy as exc:
        raise ClientError(503, "overloaded", str(exc), {"Retry-After": str(exc.retry_after)}) from exc
    except ImageSizeError as exc:
        raise ClientError(413 if exc.too_large else 400, "image_too_large" if exc.too_large else "image_too_small",
                          str(exc)) from exc
    except ImageDecodeError as exc:
        raise ClientError(400, "bad_image", str(exc)) from exc
    try:
        result = await scheduler.detect(EncodedImage(data, (width, height)), config.thresholds, model,
                                        wanted=lambda: _client_connected(request))
    except ImageDecodeError as exc:
        raise ClientError(400, "bad_image", str(exc)) from exc
    except (Overloaded, SchedulerClosed) as exc:
        raise _overloaded(exc) from exc
    except Abandoned as exc:  # nobody reads this answer; 499 as nginx logs it
        raise ClientError(499, "client_gone", str(exc)) from exc
    message = detection_message(result, received_at=received_at, done_at=time.perf_counter())
    return web.json_response(message)


async def ice_servers(request: web.Request) -> web.Response:
    """The STUN/TURN servers the page should use — for a caller allowed to publish only.

    Where media must go through TURN (Cloud Run, UDP-blocking networks) the browser needs the
    relay as much as the server does. The rule (``rtc_server/webrtc/turn.py``, the same for
    WHIP's ``Link`` headers): with ``RTC_AUTH_TOKEN`` set, the caller must show it (401
    otherwise) and gets every server; on a public page an anonymous caller gets the STUN
    servers and, with ``RTC_TURN_SECRET``, a TURN credential made for this page alone that
    expires after ``RTC_TURN_TTL`` — rate limited like ``/offer`` — and never the static
    passwords of ``RTC_ICE_SERVERS``.
    """
    request.app[RATE_LIMITS].check("ice-servers", request)
    config = request.app[API]
    require_publish(request, config)
    servers = ice_servers_for(config.peer.ice_servers, f"page-{uuid.uuid4().hex[:12]}",
                              static_credentials=has_publish_token(request, config))
    return web.json_response({"ice_servers": servers}, headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Can this process serve? 503 ``loading`` (models warming up), ``failed`` (a model
    failed its warm-up; the process is stopping) or ``draining`` (shutting down), else 200.
    ``?capacity=1`` also answers 503 ``full`` while every session slot is taken: the readiness
    a load balancer should use, so new offers go to instances with a free slot while
    established sessions go on (their media never passes the balancer)."""
    inference = request.app[INFERENCE]
    registry = request.app[REGISTRY]
    catalog = inference.models
    models = [{"name": n, "ready": catalog.is_ready(n)} for n in catalog.names]
    failures = [catalog.failure(n) for n in catalog.names if catalog.failure(n)]
    if failures:
        return web.json_response({"status": "failed", "detail": failures[0], "models": models}, status=503)
    if not inference.ready:
        return web.json_response({"status": "loading", "models": models}, status=503)
    sessions = {"sessions": len(registry), "max_sessions": registry.max_sessions,
                "load": inference.load()}
    if registry.draining:
        return web.json_response({"status": "draining", "models": models, **sessions}, status=503)
    if request.query.get("capacity") in ("1", "true") and registry.full:
        return web.json_response({"status": "full", "models": models, **sessions}, status=503)
    return web.json_response({"status": "ready", "model": catalog.info().to_dict(), "models": models, **sessions})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format. Open like the probes unless ``RTC_METRICS_AUTH=true``: then
    the operate right (``auth.py``)."""
    config = request.app[API]
    if config.metrics_auth:
        require_operator(request, config, request.app.get(TOKENS))
    body = request.app[REGISTRY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


#: With ``RTC_METRICS_PORT``: the application that serves ``/metrics`` on that port (the
#: composition root runs it); the main port then has no ``/metrics``.
METRICS_APP: web.AppKey[web.Application] = web.AppKey("metrics_app", web.Application)


def metrics_app(app: web.Application) -> web.Application:
    """``/metrics`` alone, reading the same registry, for a port of its own."""
    separate = web.Application()
    separate[API] = app[API]
    separate[REGISTRY] = app[REGISTRY]
    separate.router.add_get("/metrics", metrics)
    return separate


def setup_routes(app: web.Application) -> None:
    """Register every route on ``app``. Handlers use only what the composition root set on
    it before this call: ``API``, ``INFERENCE``, ``REGISTRY``, ``RATE_LIMITS``, ``TOKENS``,
    ``SNAPSHOTS``, ``SUBSCRIPTIONS`` (``context.py``)."""
    static_dir = app[API].static_dir

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static_dir / "index.html")

    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.router.add_post("/predict", predict)
    app.router.add_get("/ice-servers", ice_servers)
    app.router.add_get("/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if app[API].separate_metrics:
        app[METRICS_APP] = metrics_app(app)
    else:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/static/{path:.*}", static_file(static_dir))
    add_stream_routes(app)  # /streams: pull sources (issue 13)
    setup_session_routes(app)  # /sessions: consumers, settings, snapshots (issue 13)
    setup_whip(app)  # /whip: WHIP ingest (issue 13)
    setup_history_routes(app)  # /events: the event history in the store (issue 22)


def static_file(static_dir: Path) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """Files under ``static_dir`` only. Our own handler rather than ``add_static`` because
    aiohttp's answers a missing file with an empty non-JSON 404; here the path (already
    percent-decoded by the router) is resolved — symlinks and ``..`` included — and must
    still lie inside ``static_dir``, else 404 JSON."""
    root = static_dir.resolve()

    async def handler(request: web.Request) -> web.FileResponse:
        relative = request.match_info["path"]
        try:
            target = (root / relative).resolve()
            found = target.is_relative_to(root) and target.is_file()
        except (ValueError, OSError):  # a NUL byte, a name too long: no such file either way
            found = False
        if not found:
            raise ClientError(404, "not_found", f"no file {relative!r} under /static/")
        return web.FileResponse(target)

    return handler
