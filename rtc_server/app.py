"""The composition root: settings in, a wired aiohttp ``Application`` out.

``create_app`` builds the pieces in data-path order — engine (detector → inference
service) → stream registry → WebRTC adapters → routes — and ties their lifetimes to the
app: warm-up starts with the server (``/readyz`` says 503 until it is done), shutdown
closes every stream through its normal close path, then stops the inference thread. It is
the only module that knows every part; the process-wide aiortc/aioice adaptations are
installed here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from signaling import setup_routes
from signaling.context import INFERENCE, REGISTRY, SETTINGS
from signaling.cors import cors_middleware
from signaling.errors import ERROR_SINK, error_middleware

from .config import Settings
from .engine import loader as engine_loader
from .engine.catalog import ModelCatalog
from .engine.detector import Detector
from .engine.inference import InferenceService
from .streams.registry import StreamRegistry
from .webrtc.ice import use_host_addresses
from .webrtc.marker_release import release_counts, use_marker_release
from .webrtc.portrange import use_udp_ports

log = logging.getLogger(__name__)

#: Largest request body (``/predict`` images, offers); aiohttp answers 413 above it.
MAX_BODY_BYTES = 16 * 1024 * 1024


def load_detector(settings: Settings) -> Detector:
    """The configured detector; raises ``ModelError`` saying exactly what is wrong."""
    return engine_loader.load_detector(
        settings.model, backend=settings.backend, precision=settings.precision, imgsz=settings.imgsz,
        rect=settings.letterbox == "rect", threads=settings.threads, providers=settings.providers,
        cache_dir=settings.backend_cache,
    )


def create_app(settings: Settings, detector: Detector | None = None) -> web.Application:
    use_host_addresses(settings.ice_addresses)
    use_udp_ports(settings.udp_ports)
    use_marker_release(settings.marker_release)  # before any receiver exists
    inference = InferenceService(ModelCatalog.of(detector if detector is not None else load_detector(settings)))
    # CORS outside the error middleware, so error answers carry CORS headers too.
    app = web.Application(middlewares=[cors_middleware(settings.cors_origins), error_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[INFERENCE] = inference
    app[REGISTRY] = StreamRegistry(settings, inference, release_counts)
    app[ERROR_SINK] = app[REGISTRY].metrics.count_error
    setup_routes(app)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    warmup = asyncio.create_task(app[INFERENCE].warmup(), name="warmup")
    yield
    await app[REGISTRY].close_all()
    if not warmup.done():
        warmup.cancel()
    await asyncio.gather(warmup, return_exceptions=True)
    app[INFERENCE].close()
    log.info("server stopped")
