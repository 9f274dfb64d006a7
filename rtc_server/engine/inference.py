"""``InferenceService``: the one door between the event loop and the detector.

It owns a dedicated worker thread (not the loop's default executor, which DNS lookups and
file I/O share) so a frame being processed never blocks signaling or other peers:
onnxruntime releases the GIL while it runs. Sessions and routes call ``await detect(...)``
and never see the detector or its thread; a cross-peer batching scheduler can later take
this class's place behind the same method.
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

from .detector import DetectionResult, Detector, ModelInfo
from .yolo import Thresholds

log = logging.getLogger(__name__)


class VideoFrameLike(Protocol):
    """What we need of an ``av.VideoFrame``; converting it is part of preprocessing."""

    def to_ndarray(self, format: str) -> np.ndarray: ...  # noqa: A002 (PyAV's name)


Image = np.ndarray | VideoFrameLike


class InferenceService:
    def __init__(self, detector: Detector) -> None:
        self._detector = detector
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._ready = threading.Event()

    @property
    def info(self) -> ModelInfo:
        return self._detector.info

    @property
    def ready(self) -> bool:
        """True once the model has run once (warm): what ``/readyz`` reports."""
        return self._ready.is_set()

    async def warmup(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._detector.warmup)
        self._ready.set()
        log.info("model %s warmed up (%s)", self.info.name, ", ".join(self.info.providers))

    async def detect(self, image: Image, thresholds: Thresholds) -> DetectionResult:
        """Detect in one RGB image or video frame, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._detect_one, image, thresholds)

    def _detect_one(self, image: Image, thresholds: Thresholds) -> DetectionResult:
        t0 = time.perf_counter()
        array = image if isinstance(image, np.ndarray) else image.to_ndarray(format="rgb24")
        convert_ms = (time.perf_counter() - t0) * 1000
        (result,) = self._detector.detect([array], [thresholds])
        # The YUV -> RGB conversion is preprocessing too; report it there, honestly.
        return replace(result, started_at=t0, preprocess_ms=result.preprocess_ms + convert_ms)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
