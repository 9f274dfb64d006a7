"""``StubDetector``: a test double of the engine's ``Detector`` (no model, fixed boxes).

Why: most tests are about plumbing — streams, mailboxes, consumers, limits, sessions, the
data channel, HTTP, bad input, observability — not about what YOLO finds. Running the real
model there made them slow (two cores shared with VP8 encoders) and timing-bound. The stub
answers at once with boxes the test knows exactly, so a plumbing test asserts those boxes
exactly; what the model finds is asserted by the real-model tests (parity, backends,
accuracy, and a few end-to-end tests per transport).

Its boxes are *fractions* of the image, so they land on the same objects whatever the
frame size: the bus and the person of ``tests/fixtures/bus.jpg`` letterboxed into a 640x480
frame (``conftest.bus_frame``), roughly where the real model puts them. ``detect`` honours
the thresholds (``conf``, ``classes``, ``max_det``) as the real decode does.

A **gate** makes the order and the moment of inference the test's own: with
``StubDetector(gated=True)`` (or a ``hold`` predicate for some calls only) each held call is
recorded, then blocks until the test calls ``release()``; ``await entered()`` waits for
the next held call to begin. So "frames arriving while the model is busy" is an exact
count, not a wall-clock window.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtc_server.engine.detector import Detection, DetectionResult, ModelInfo
from rtc_server.engine.yolo import Letterbox, Thresholds

#: COCO's 80 class names, in the order YOLO11's metadata gives them (``/models`` and the
#: data channel's ``config`` acknowledgement list them; class 0 is person, 5 is bus).
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

Marker = tuple[int, int]


@dataclass(frozen=True)
class StubBox:
    """One fixed detection: a box as fractions of the image (x1, y1, x2, y2), a score, a class."""

    box: tuple[float, float, float, float]
    score: float
    class_id: int


#: What the stub finds in every image, highest score first: the bus and two people of
#: bus.jpg as ``bus_frame`` shows it (the photo fills x 0.17..0.83 of the 640x480 frame).
STUB_BOXES: tuple[StubBox, ...] = (
    StubBox((0.17, 0.23, 0.83, 0.74), 0.94, 5),   # bus
    StubBox((0.24, 0.40, 0.37, 0.89), 0.89, 0),   # person
    StubBox((0.67, 0.38, 0.80, 0.88), 0.85, 0),   # person
    StubBox((0.38, 0.42, 0.44, 0.86), 0.30, 0),   # person, a low score (conf threshold tests)
)


def marker_of(image: np.ndarray) -> Marker:
    """The top-left pixel's first two channels: tests mark frames there (stream, count)."""
    return int(image[0, 0, 0]), int(image[0, 0, 1])


class StubDetector:
    """Implements ``rtc_server.engine.detector.Detector`` with ``STUB_BOXES`` and no model.

    ``gated``: hold every call until ``release()``; ``hold(images)``: hold only the calls it
    says (e.g. ``/predict``'s image, not a stream's frames). ``delay_s`` sleeps inside
    each call (a slow model, where a test needs one that is slow but not held).
    """

    def __init__(self, *, name: str = "yolo11n", boxes: Sequence[StubBox] = STUB_BOXES, gated: bool = False,
                 hold: Callable[[Sequence[np.ndarray]], bool] | None = None, delay_s: float = 0.0,
                 imgsz: int = 640, backend: str = "stub", precision: str = "f32") -> None:
        self.info = ModelInfo(name=name, version="stub", sha256="0" * 64, class_names=COCO_NAMES,
                              providers=("CPUExecutionProvider",), backend=backend, precision=precision,
                              input_shape=(None, 3, None, None))
        self.boxes = tuple(boxes)
        self._hold = hold if hold is not None else (lambda images: gated)
        self._delay_s = delay_s
        self._imgsz = imgsz
        self._lock = threading.Lock()
        self._entered = threading.Semaphore(0)
        self._gate = threading.Semaphore(0)
        #: Every call's images by their marker pixel, and their sizes (width, height).
        self.calls: list[list[Marker]] = []
        #: The calls that were held, by marker, in the order they began.
        self.held: list[list[Marker]] = []
        self._claimed = 0
        self.sizes: list[list[tuple[int, int]]] = []
        #: Set while a call is inside ``detect`` (held or sleeping).
        self.running = threading.Event()
        self.warmups = 0

    # ----- the Detector protocol ---------------------------------------------------------------
    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        started = time.perf_counter()
        markers = [marker_of(i) for i in images]
        held = self._hold(images)
        with self._lock:
            self.calls.append(markers)
            self.sizes.append([(int(i.shape[1]), int(i.shape[0])) for i in images])
            if held:
                self.held.append(markers)
        self.running.set()
        try:
            if held:
                self._entered.release()
                if not self._gate.acquire(timeout=60):  # a guard against a hung test only
                    raise TimeoutError("the test never released this call")
            if self._delay_s:
                time.sleep(self._delay_s)
        finally:
            self.running.clear()
        return [self._result(image, th, started, len(images)) for image, th in zip(images, thresholds, strict=True)]

    def warmup(self) -> None:
        self.warmups += 1

    # ----- the gate ------------------------------------------------------------------------------
    async def entered(self, timeout: float = 30.0) -> list[Marker]:
        """Wait until the next held call (in the order they began) has begun; the frames
        (markers) it got."""
        assert await asyncio.to_thread(self._entered.acquire, True, timeout), "no call reached the detector"
        with self._lock:
            self._claimed += 1
            return self.held[self._claimed - 1]

    def release(self, calls: int = 1) -> None:
        """Let ``calls`` held calls (present or future) finish."""
        for _ in range(calls):
            self._gate.release()

    # ----- what it finds -----------------------------------------------------------------------
    def detections(self, width: int, height: int, thresholds: Thresholds | None = None) -> list[Detection]:
        """Exactly what ``detect`` reports for a ``width x height`` image under ``thresholds``."""
        thresholds = thresholds or Thresholds()
        out = []
        for b in self.boxes:
            if b.score < thresholds.conf or (thresholds.classes is not None and b.class_id not in thresholds.classes):
                continue
            x1, y1, x2, y2 = b.box
            out.append(Detection(box=(x1 * width, y1 * height, x2 * width, y2 * height), score=b.score,
                                 class_id=b.class_id, label=self.info.class_names[b.class_id]))
        return out[: thresholds.max_det]

    def _result(self, image: np.ndarray, thresholds: Thresholds, started: float, batch: int) -> DetectionResult:
        height, width = int(image.shape[0]), int(image.shape[1])
        lb = Letterbox.fit(width, height, self._imgsz)
        return DetectionResult(model=self.info, width=width, height=height, input_hw=lb.input_hw,
                               detections=self.detections(width, height, thresholds), started_at=started,
                               preprocess_ms=0.0, inference_ms=0.0, postprocess_ms=0.0, batch_size=batch)


def boxes(detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A message's detections without the tracker's fields (``track_id``, ``predicted``):
    what the detector found, to compare with the stub's boxes (tracking has its own tests)."""
    return [{k: v for k, v in d.items() if k not in ("track_id", "predicted")} for d in detections]
