"""The composition root: settings in, a wired aiohttp ``Application`` out.

``create_app`` builds the pieces in data-path order — engine (model catalog → inference
service) → stream registry → WebRTC adapters → routes — and ties their lifetimes to the
app: warm-up starts with the server (``/readyz`` says 503 until it is done; a model that
fails it is fatal: ``on_fatal`` stops the process), shutdown closes every stream through
its normal close path, then stops the inference thread. It is the only module that knows
every part; the process-wide aiortc/aioice adaptations are installed here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from signaling import setup_routes
from signaling.context import INFERENCE, REGISTRY, SETTINGS
from signaling.cors import cors_middleware
from signaling.errors import ERROR_SINK, error_middleware

from .config import DEFAULT_MODEL, Settings
from .engine.catalog import ModelCatalog
from .engine.detector import Detector
from .engine.inference import InferenceService
from .engine.store import LoadOptions, load_catalog
from .streams.registry import StreamRegistry
from .webrtc.ice import use_host_addresses
from .webrtc.marker_release import release_counts, use_marker_release
from .webrtc.portrange import use_udp_ports

log = logging.getLogger(__name__)

#: Largest request body (``/predict`` images, offers); aiohttp answers 413 above it.
MAX_BODY_BYTES = 16 * 1024 * 1024


#: Called with a message when the server cannot go on (a model failed its warm-up).
FATAL: web.AppKey[Callable[[str], None]] = web.AppKey("fatal")


def load_models(settings: Settings) -> ModelCatalog:
    """Every configured model, fetched, verified and loaded; raises ``SourceError`` or
    ``ModelError`` saying exactly which model and what is wrong."""
    options = LoadOptions(imgsz=settings.imgsz, letterbox=settings.letterbox, threads=settings.threads,
                          cache_dir=settings.model_cache, fetch_timeout=settings.model_fetch_timeout,
                          backend=settings.backend, precision=settings.precision, providers=settings.providers,
                          backend_cache=settings.backend_cache)
    if settings.models and settings.model != DEFAULT_MODEL:
        log.info("RTC_MODELS is set, so RTC_MODEL/--model (%s) is not used", settings.model)
    return load_catalog(settings.model_specs(), options)


def load_detector(settings: Settings) -> Detector:
    """The default model's detector (tests and tools that need one model)."""
    return load_models(settings).get()


def create_app(settings: Settings, models: ModelCatalog | Detector | None = None,
               on_fatal: Callable[[str], None] | None = None) -> web.Application:
    """The wired app. ``models``: a loaded catalog, one detector, or None to load the
    configured ones. ``on_fatal`` (the process entry point passes one that stops the
    server) is called when the server cannot become ready; without it the failure is
    logged and ``/readyz`` reports it."""
    use_host_addresses(settings.ice_addresses)
    use_udp_ports(settings.udp_ports)
    use_marker_release(settings.marker_release)  # before any receiver exists
    if models is None:
        models = load_models(settings)
    inference = InferenceService(models if isinstance(models, ModelCatalog) else ModelCatalog.of(models))
    # CORS outside the error middleware, so error answers carry CORS headers too.
    app = web.Application(middlewares=[cors_middleware(settings.cors_origins), error_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[INFERENCE] = inference
    app[REGISTRY] = StreamRegistry(settings, inference, release_counts)
    app[ERROR_SINK] = app[REGISTRY].metrics.count_error
    app[FATAL] = on_fatal or (lambda reason: None)
    setup_routes(app)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _warm_up(app: web.Application) -> None:
    """Warm every model; one that fails (a file that loads but cannot run) is fatal."""
    inference = app[INFERENCE]
    try:
        await inference.warmup()
    except Exception as exc:
        catalog = inference.models
        name = next((n for n in catalog.names if not catalog.is_ready(n)), catalog.default)
        reason = f"model {name!r} failed its warm-up run, so it cannot serve: {type(exc).__name__}: {str(exc).strip()}"
        catalog.mark_failed(name, reason)
        log.error("%s; stopping", reason)
        app[FATAL](reason)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    warmup = asyncio.create_task(_warm_up(app), name="warmup")
    yield
    await app[REGISTRY].close_all()
    if not warmup.done():
        warmup.cancel()
    await asyncio.gather(warmup, return_exceptions=True)
    app[INFERENCE].close()
    log.info("server stopped")
