"""The detector interface and the one YOLO detector that every backend runs under.

A detector is synchronous and batch-shaped: a list of RGB images in, a list of results out.
It is called from worker threads (the ``Scheduler``'s, ``scheduler.py``), never from the event loop.
``YoloDetector`` owns the YOLO geometry (letterbox, blob, decode, NMS from ``yolo.py``) and
hands tensors to a backend (``backends/``: onnxruntime, OpenVINO) that only runs them — so
a backend, a precision or a GPU changes nothing in sessions, routes or the geometry.
``loader.load_detector`` is how the rest of the server gets one.
"""

from __future__ import annotations

import ast
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .backends import Backend
from .yolo import Letterbox, Thresholds, decode, letterbox_into

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """The model file is missing, unreadable, not a YOLO11 detection export, or cannot run
    as configured (backend, precision, execution provider). The server exits 1 on it."""


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float
    class_id: int
    label: str

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "class_id": self.class_id,
            "label": self.label,
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    class_names: tuple[str, ...]
    providers: tuple[str, ...] = field(default=())
    #: The backend that runs it ("onnxruntime", "openvino") and the precision it really
    #: computes in ("f32", "bf16", "f16", "int8").
    backend: str = "onnxruntime"
    precision: str = "f32"
    #: The model input as ``[B, 3, H, W]``, None for dynamic dimensions.
    input_shape: tuple[int | None, ...] = (None, 3, None, None)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256[:12],
                "backend": self.backend, "precision": self.precision}


@dataclass(frozen=True)
class DetectionResult:
    """Detections for one image plus the honest timing of each stage (milliseconds)."""

    #: The model that produced them.
    model: ModelInfo
    width: int
    height: int
    input_hw: tuple[int, int]
    detections: list[Detection]
    #: ``time.perf_counter()`` when this image's preprocessing began (for queue time).
    started_at: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    batch_size: int = 1


class Detector(Protocol):
    """What streams and routes rely on, through the ``Scheduler``."""

    info: ModelInfo

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        """Detect objects in each ``H x W x 3`` uint8 RGB image. Blocking; thread-safe."""
        ...

    def warmup(self) -> None:
        """Run once on dummy input so the first real frame pays no lazy-init cost."""
        ...


class YoloDetector:
    """A YOLO11 detection model (``[B, 3, H, W]`` in, ``[B, 4 + classes, anchors]`` out) on a backend.

    Models with dynamic H and W get the letterbox ``imgsz``/``rect`` ask for (a 640x480
    frame runs at 480x640); a static-shape export (Ultralytics' default: 640x640) gets
    letterboxed to its own size. A static batch dimension is honoured by running the
    images in chunks of that size.
    """

    #: ``auto``'s trial table when it chose this path (``autoselect``), else None.
    auto_trials: list[dict[str, object]] | None = None

    def __init__(self, backend: Backend, *, name: str, sha256: str, imgsz: int = 640, rect: bool = True) -> None:
        info = backend.info
        self._backend = backend
        self._imgsz = imgsz
        self._rect = rect
        self._static_hw = info.static_hw
        if self._static_hw is not None:
            log.info("model %s has a static %dx%d input: frames are letterboxed to it (imgsz/letterbox "
                     "settings do not apply)", name, self._static_hw[1], self._static_hw[0])
        self._batch = info.static_batch
        self._dtype = info.input_dtype
        self._inputs = _InputBuffers()
        names = self._class_names(info.metadata.get("names", ""))
        channels = info.output_channels
        if channels is not None and channels < 5:
            raise ModelError(f"{name}: output has {channels} channels; a YOLO detection head has 4 box "
                             "coordinates plus at least one class")
        if channels is not None and names and channels != 4 + len(names):
            raise ModelError(f"{name}: output has {channels} channels but the metadata names "
                             f"{len(names)} classes (expected {4 + len(names)} channels)")
        if not names:
            if channels is None:
                raise ModelError(f"{name}: no class names in metadata and no static class count")
            names = tuple(f"class{i}" for i in range(channels - 4))
        self.info = ModelInfo(
            name=name,
            version=info.metadata.get("version", "unknown"),
            sha256=sha256,
            class_names=names,
            providers=info.providers,
            backend=info.name,
            precision=info.precision,
            input_shape=info.input_shape,
        )

    @property
    def backend(self) -> Backend:
        return self._backend

    @staticmethod
    def _class_names(text: str) -> tuple[str, ...]:
        """Ultralytics stores ``names`` as a Python dict literal: ``{0: 'person', ...}``."""
        if not text:
            return ()
        try:
            mapping = ast.literal_eval(text)
            return tuple(str(mapping[i]) for i in sorted(mapping))
        except (ValueError, SyntaxError, TypeError, KeyError) as exc:
            raise ModelError(f"model metadata 'names' is unreadable: {exc}") from exc

    def letterbox(self, width: int, height: int) -> Letterbox:
        if self._static_hw is not None:
            return Letterbox.fit(width, height, shape=self._static_hw)
        return Letterbox.fit(width, height, self._imgsz, rect=self._rect)

    def blob(self, image: np.ndarray, lb: Letterbox) -> np.ndarray:
        """One image's ``1 x 3 x H x W`` input in the model's dtype (float16 exports too), in
        a fresh array (benchmarks, auto's trials); ``detect`` fills reused buffers instead."""
        blob = np.empty((1, 3, *lb.input_hw), self._dtype)
        letterbox_into(image, lb, blob[0])
        return blob

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a ``[B, 3, H, W]`` batch, in chunks of the model's static batch size if it has one."""
        step = self._batch
        if step is None or len(batch) == step:
            return self._backend.run(batch)
        outputs = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            short = step - len(chunk)
            if short:  # pad the last chunk to the static batch with blank images
                chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self._backend.run(chunk)[: step - short])
        return np.concatenate(outputs)

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        # Images whose letterboxes share an input size run as one batch.
        boxes_of = [self.letterbox(image.shape[1], image.shape[0]) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, lb in enumerate(boxes_of):
            groups.setdefault(lb.input_hw, []).append(i)

        results: list[DetectionResult | None] = [None] * len(images)
        started = [0.0] * len(images)
        pre_ms = [0.0] * len(images)
        for (height, width), indices in groups.items():
            batch = self._inputs.get(len(indices), height, width, self._dtype)
            for row, i in enumerate(indices):
                started[i] = time.perf_counter()
                letterbox_into(images[i], boxes_of[i], batch[row])
                pre_ms[i] = (time.perf_counter() - started[i]) * 1000
            t0 = time.perf_counter()
            output = self.infer(batch)
            inference_ms = (time.perf_counter() - t0) * 1000
            for row, i in enumerate(indices):
                t1 = time.perf_counter()
                detections = self._detections(output[row], boxes_of[i], thresholds[i])
                post_ms = (time.perf_counter() - t1) * 1000
                results[i] = DetectionResult(
                    model=self.info,
                    width=boxes_of[i].width,
                    height=boxes_of[i].height,
                    input_hw=boxes_of[i].input_hw,
                    detections=detections,
                    started_at=started[i],
                    preprocess_ms=pre_ms[i],
                    inference_ms=inference_ms,
                    postprocess_ms=post_ms,
                    batch_size=len(indices),
                )
        return [r for r in results if r is not None]

    def _detections(self, output: np.ndarray, lb: Letterbox, thresholds: Thresholds) -> list[Detection]:
        boxes, scores, class_ids = decode(output, thresholds)
        boxes = lb.unmap(boxes)
        names = self.info.class_names
        return [
            Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(s),
                      class_id=int(c), label=names[c] if c < len(names) else str(c))
            for b, s, c in zip(boxes.tolist(), scores.tolist(), class_ids.tolist(), strict=True)
        ]

    def warmup(self) -> None:
        """Run the input size a 640x480 camera frame takes (with ``square`` that is every
        frame's), so the common first frame pays no first-run cost. Other sizes (a 720p
        camera, a square ``/predict`` image) pay one first run of their own — with OpenVINO
        one compile, ~0.15 s — instead of every start paying for sizes it may never see."""
        self.detect([np.zeros((480, 640, 3), np.uint8)], [Thresholds()])


class _InputBuffers(threading.local):
    """Each worker thread's model-input buffers, reused from frame to frame.

    Why: a fresh 3.7 MB input per 640x480 frame is new memory the kernel faults in page by
    page (~3 ms a frame measured here, a sixth of an OpenVINO bf16 run); a buffer written
    again is not. One per thread because workers run concurrently, and a batch is consumed
    (run, output copied) before its thread asks for another. One buffer per input size,
    as deep as the largest batch seen at that size (a smaller batch is a view of its first
    rows, so batch sizes that vary do not churn); a few sizes are kept, so an odd
    ``/predict`` size does not evict the camera's.
    """

    KEEP = 4

    def __init__(self) -> None:
        self._by_size: dict[tuple[int, int, np.dtype], np.ndarray] = {}

    def get(self, batch: int, height: int, width: int, dtype: np.dtype) -> np.ndarray:
        """A ``batch x 3 x height x width`` array of ``dtype``, C-contiguous, contents undefined."""
        key = (height, width, dtype)
        buffer = self._by_size.pop(key, None)
        if buffer is None or len(buffer) < batch:
            buffer = np.empty((batch, 3, height, width), dtype)
        self._by_size[key] = buffer  # most recently used last
        while len(self._by_size) > self.KEEP:
            del self._by_size[next(iter(self._by_size))]
        return buffer[:batch]
