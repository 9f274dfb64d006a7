"""The detector interface and its onnxruntime implementation.

A detector is synchronous and batch-shaped: a list of RGB images in, a list of results out.
It is called from one worker thread (see ``inference.py``), never from the event loop, and
nothing else in the server touches onnxruntime — so batching across peers, OpenVINO or a
GPU provider can replace ``OnnxYoloDetector`` without a change to sessions or routes.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from ..models import sha256_of
from .yolo import Letterbox, Thresholds, decode, to_blob


class ModelError(RuntimeError):
    """The model file is missing, unreadable or not a YOLO11 detection export."""


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

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256[:12]}


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


class OnnxYoloDetector:
    """YOLO11 detection export (``[B, 3, H, W]`` in, ``[B, 4 + classes, anchors]`` out)."""

    def __init__(
        self,
        model_path: Path,
        *,
        imgsz: int = 640,
        rect: bool = True,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path} (run `make model` or set RTC_MODEL)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"cannot load {model_path}: {exc}") from exc
        self._imgsz = imgsz
        self._rect = rect
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 1 or len(outputs[0].shape) != 3:
            raise ModelError(
                f"{model_path} is not a YOLO detection export: inputs "
                f"{[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]}"
            )
        self._input_name = inputs[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        names = self._class_names(meta.get("names", ""))
        channels = outputs[0].shape[1]
        if isinstance(channels, int) and names and channels != 4 + len(names):
            raise ModelError(f"{model_path}: output has {channels} channels but {len(names)} class names")
        if not names:
            if not isinstance(channels, int):
                raise ModelError(f"{model_path}: no class names in metadata and no static class count")
            names = tuple(f"class{i}" for i in range(channels - 4))
        self.info = ModelInfo(
            name=model_path.stem,
            version=meta.get("version", "unknown"),
            sha256=sha256_of(model_path),
            class_names=names,
            providers=tuple(self._session.get_providers()),
        )

    @staticmethod
    def _class_names(text: str) -> tuple[str, ...]:
        """Ultralytics stores ``names`` as a Python dict literal: ``{0: 'person', ...}``."""
        if not text:
            return ()
        try:
            mapping = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ModelError(f"model metadata 'names' is unreadable: {exc}") from exc
        return tuple(str(mapping[i]) for i in sorted(mapping))

    def letterbox(self, width: int, height: int) -> Letterbox:
        return Letterbox.fit(width, height, self._imgsz, rect=self._rect)

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        # Images whose letterboxes share an input size run as one batch.
        started: list[float] = []
        boxes_of: list[Letterbox] = []
        blobs: list[np.ndarray] = []
        pre_ms: list[float] = []
        for image in images:
            t0 = time.perf_counter()
            lb = self.letterbox(image.shape[1], image.shape[0])
            boxes_of.append(lb)
            blobs.append(to_blob(lb.apply(image)))
            started.append(t0)
            pre_ms.append((time.perf_counter() - t0) * 1000)

        groups: dict[tuple[int, int], list[int]] = {}
        for i, lb in enumerate(boxes_of):
            groups.setdefault(lb.input_hw, []).append(i)

        results: list[DetectionResult | None] = [None] * len(images)
        for indices in groups.values():
            t0 = time.perf_counter()
            batch = blobs[indices[0]] if len(indices) == 1 else np.concatenate([blobs[i] for i in indices])
            (output,) = self._session.run(None, {self._input_name: batch})
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
        for w, h in ((640, 480), (self._imgsz, self._imgsz)):
            self.detect([np.zeros((h, w, 3), np.uint8)], [Thresholds()])
