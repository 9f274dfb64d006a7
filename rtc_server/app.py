"""The composition root: settings in, a wired aiohttp ``Application`` out.

``create_app`` builds the pieces in data-path order — engine (detectors → scheduler)
→ stream registry → WebRTC adapters → routes — and ties their lifetimes to the app:
warm-up starts with the server (``/readyz`` says 503 until it is done), shutdown closes
every stream through its normal close path, then stops the scheduler's workers. It is
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
from .engine.catalog import ModelCatalog
from .engine.detector import Detector, OnnxYoloDetector
from .engine.scheduler import Scheduler, SchedulerConfig, WorkerPlan, on_accelerator, plan_workers
from .streams.registry import StreamRegistry
from .webrtc.ice import use_host_addresses
from .webrtc.marker_release import release_counts, use_marker_release
from .webrtc.portrange import use_udp_ports

log = logging.getLogger(__name__)

#: Largest request body (``/predict`` images, offers); aiohttp answers 413 above it.
MAX_BODY_BYTES = 16 * 1024 * 1024


def worker_plan(settings: Settings) -> WorkerPlan:
    """How many inference workers, and the intra-op threads each worker's model gets."""
    return plan_workers(settings.workers, settings.threads)


def load_detector(settings: Settings, threads: int | None = None) -> Detector:
    """The configured detector with ``threads`` intra-op threads (None: one worker's share,
    ``worker_plan``); raises ``ModelError`` saying exactly what is wrong."""
    return OnnxYoloDetector(
        settings.model, imgsz=settings.imgsz, rect=settings.letterbox == "rect",
        threads=worker_plan(settings).threads if threads is None else threads,
    )


def build_scheduler(settings: Settings, detector: Detector | None = None) -> Scheduler:
    """The process's one scheduler: ``workers`` model instances (Triton's instance group),
    each with its share of the cores. A detector handed in (tests, ``__main__``'s
    fail-fast load) is worker 0's; the others load their own, or share a handed-in one
    that is not an onnxruntime model."""
    plan = worker_plan(settings)
    first = detector if detector is not None else load_detector(settings, plan.threads)
    models = ModelCatalog.of(first)
    accelerator = on_accelerator(models)
    if accelerator and not settings.workers:
        plan = plan_workers(settings.workers, settings.threads, accelerator=True)
    own_instances = isinstance(first, OnnxYoloDetector)
    instances = [models] + [ModelCatalog.of(load_detector(settings, plan.threads)) if own_instances else models
                            for _ in range(plan.workers - 1)]
    config = SchedulerConfig(
        workers=plan.workers,
        max_batch=settings.max_batch or (8 if accelerator else 1),
        batch_wait_s=settings.batch_wait_ms / 1000,
        predict_queue=settings.predict_queue,
        predict_max_wait_s=settings.predict_max_wait,
    )
    log.info("scheduler: %d worker(s) x %d thread(s), batches up to %d", plan.workers, plan.threads,
             config.max_batch)
    return Scheduler(models, config, instances=instances)


def create_app(settings: Settings, detector: Detector | None = None) -> web.Application:
    use_host_addresses(settings.ice_addresses)
    use_udp_ports(settings.udp_ports)
    use_marker_release(settings.marker_release)  # before any receiver exists
    inference = build_scheduler(settings, detector)
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
