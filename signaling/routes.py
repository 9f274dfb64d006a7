"""The HTTP surface. Handlers validate input, then call the session registry or the
inference service through their public methods — nothing here touches aiortc internals
or onnxruntime.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from rtc_server.images import EncodedImage, ImageDecodeError
from rtc_server.messages import detection_message
from rtc_server.metrics import CONTENT_TYPE
from rtc_server.session import OfferError
from rtc_server.yolo import Thresholds

from .context import INFERENCE, REGISTRY, SETTINGS
from .errors import ClientError

IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ClientError(415, "unsupported_media_type", "send the offer as application/json")
    try:
        body = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClientError(400, "bad_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ClientError(400, "bad_offer", "the body must be a JSON object")
    return body


def _require_ready(request: web.Request) -> None:
    if not request.app[INFERENCE].ready:
        raise ClientError(503, "not_ready", "the model is still loading; retry shortly")


async def offer(request: web.Request) -> web.Response:
    """``{"sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer", "session_id"}``."""
    body = await _json_body(request)
    _require_ready(request)
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        raise ClientError(400, "bad_offer", f"'type' must be \"offer\", not {kind!r}")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ClientError(400, "bad_offer", "'sdp' must be an SDP offer (text starting with v=0)")
    try:
        session, answer = await request.app[REGISTRY].create(sdp)
    except OfferError as exc:
        raise ClientError(400, "bad_offer", str(exc)) from exc
    except ValueError as exc:  # aiortc's SDP parser and negotiation raise ValueError
        raise ClientError(400, "bad_offer", f"the offer cannot be answered: {exc}") from exc
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session.id})


async def predict(request: web.Request) -> web.Response:
    """JPEG/PNG body -> the detection message for that image."""
    received_at = time.perf_counter()
    if request.content_type not in IMAGE_TYPES:
        raise ClientError(415, "unsupported_media_type", "send image/jpeg or image/png")
    _require_ready(request)
    data = await request.read()
    settings = request.app[SETTINGS]
    inference = request.app[INFERENCE]
    thresholds = Thresholds(conf=settings.conf, iou=settings.iou, max_det=settings.max_det)
    try:
        result = await inference.detect(EncodedImage(data), thresholds)
    except ImageDecodeError as exc:
        raise ClientError(400, "bad_image", str(exc)) from exc
    message = detection_message(result, inference.info, received_at=received_at, done_at=time.perf_counter())
    return web.json_response(message)


async def ice_servers(request: web.Request) -> web.Response:
    """The STUN/TURN servers the page should use: ``RTC_ICE_SERVERS``, as configured.

    Where media must go through TURN (Cloud Run, UDP-blocking networks) the browser needs the
    relay as much as the server does. The credentials are served to every page that may call
    ``/offer``, so use short-lived ones (coturn's ``use-auth-secret`` / TURN REST API).
    """
    return web.json_response({"ice_servers": list(request.app[SETTINGS].ice_servers)})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    inference = request.app[INFERENCE]
    if not inference.ready:
        return web.json_response({"status": "loading"}, status=503)
    return web.json_response({"status": "ready", "model": inference.info.to_dict(),
                              "sessions": len(request.app[REGISTRY])})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format. Unauthenticated, like the probes: scrape from inside."""
    body = request.app[REGISTRY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def setup_routes(app: web.Application) -> None:
    static_dir = app[SETTINGS].static_dir

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static_dir / "index.html")

    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.router.add_post("/predict", predict)
    app.router.add_get("/ice-servers", ice_servers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/static/", static_dir, follow_symlinks=False)
