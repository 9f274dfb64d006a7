"""``InferenceService``: the one door between the event loop and the detectors.

It owns a dedicated worker thread (not the loop's default executor, which DNS lookups and
file I/O share) so a frame being processed never blocks signaling or other peers:
onnxruntime releases the GIL while it runs. Streams and routes call ``await detect(...)``
naming a model of the catalog (None: the default) and never see a detector or its thread;
a cross-stream batching scheduler can later take this class's place behind the same method.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

import numpy as np

from .catalog import ModelCatalog
from .detector import DetectionResult, Detector
from .yolo import Thresholds

log = logging.getLogger(__name__)


class VideoFrameLike(Protocol):
    """What we need of an ``av.VideoFrame``; converting it is part of preprocessing."""

    def to_ndarray(self, format: str) -> np.ndarray: ...  # noqa: A002 (PyAV's name)


Image = np.ndarray | VideoFrameLike


class InferenceService:
    def __init__(self, models: ModelCatalog) -> None:
        self.models = models
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        """True once every model has run once (warm): what ``/readyz`` reports."""
        return self._ready.is_set()

    async def warmup(self) -> None:
        loop = asyncio.get_running_loop()
        for detector in self.models:
            await loop.run_in_executor(self._executor, detector.warmup)
            self.models.mark_ready(detector.info.name)
            log.info("model %s warmed up (%s)", detector.info.name, ", ".join(detector.info.providers))
        self._ready.set()

    async def detect(self, image: Image, thresholds: Thresholds, model: str | None = None) -> DetectionResult:
        """Detect in one RGB image or video frame with ``model`` (None: the default), off
        the event loop. Raises ``UnknownModel`` for a name the catalog does not have."""
        detector = self.models.get(model)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._detect_one, detector, image, thresholds)

    @staticmethod
    def _detect_one(detector: Detector, image: Image, thresholds: Thresholds) -> DetectionResult:
        t0 = time.perf_counter()
        array = image if isinstance(image, np.ndarray) else image.to_ndarray(format="rgb24")
        convert_ms = (time.perf_counter() - t0) * 1000
        (result,) = detector.detect([array], [thresholds])
        # The YUV -> RGB conversion is preprocessing too; report it there, honestly.
        return replace(result, started_at=t0, preprocess_ms=result.preprocess_ms + convert_ms)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
