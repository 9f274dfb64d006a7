"""COCO mAP of a detector on a YOLO-format labelled image folder (coco128 here).

Used by ``python -m rtc_server.models accuracy`` (the accuracy record ``auto`` trusts) and
by the INT8 quantizer's accuracy control: a tool, so it sits in the models package above
the engine, not in it. Detections come through the detector's own path — the
project's letterbox, backend, decode and NMS — at Ultralytics' validation settings
(conf 0.001, IoU 0.7, at most 300 per image); pycocotools scores them against the labels
(YOLO txt: ``class cx cy w h`` normalised to the image size).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..engine.detector import Detector
from ..engine.yolo import Thresholds

#: Ultralytics ``val`` settings.
VAL_THRESHOLDS = Thresholds(conf=0.001, iou=0.7, max_det=300)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    width: int
    height: int
    #: ``N x 5``: class, x1, y1, w, h in pixels (COCO's bbox convention).
    boxes: np.ndarray


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def labels_folder(images: Path) -> Path:
    """YOLO layout: ``.../images/<split>`` -> ``.../labels/<split>``."""
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images


def load_dataset(images: Path, limit: int | None = None) -> list[LabelledImage]:
    labels = labels_folder(Path(images))
    out = []
    for path in image_files(Path(images))[:limit]:
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        h, w = bgr.shape[:2]
        rows = np.zeros((0, 5), np.float64)
        label = labels / (path.stem + ".txt")
        if label.is_file() and label.stat().st_size:
            yolo = np.loadtxt(label, ndmin=2)[:, :5]
            rows = np.stack([yolo[:, 0], (yolo[:, 1] - yolo[:, 3] / 2) * w, (yolo[:, 2] - yolo[:, 4] / 2) * h,
                             yolo[:, 3] * w, yolo[:, 4] * h], axis=1)
        out.append(LabelledImage(path, w, h, rows))
    return out


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise ValueError(f"{path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Score:
    map50_95: float
    map50: float
    images: int
    detections: int


def evaluate(detect: Detector | Callable[[np.ndarray], list[tuple[list[float], float, int]]],
             dataset: Sequence[LabelledImage], classes: int = 80) -> Score:
    """mAP50-95 and mAP50 (pycocotools) of ``detect`` on ``dataset``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt: dict = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(classes)]}
    results = []
    for image_id, item in enumerate(dataset, start=1):
        gt["images"].append({"id": image_id, "width": item.width, "height": item.height})
        for c, x, y, w, h in item.boxes.tolist():
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": int(c), "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        rgb = read_rgb(item.path)
        if callable(getattr(detect, "detect", None)):
            (result,) = detect.detect([rgb], [VAL_THRESHOLDS])  # type: ignore[union-attr]
            found = [(list(d.box), d.score, d.class_id) for d in result.detections]
        else:
            found = detect(rgb)  # type: ignore[operator]
        for (x1, y1, x2, y2), score, c in found:
            results.append({"image_id": image_id, "category_id": int(c), "score": float(score),
                            "bbox": [x1, y1, x2 - x1, y2 - y1]})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        found_coco = truth.loadRes(results) if results else None
        if found_coco is None:
            return Score(0.0, 0.0, len(dataset), 0)
        ev = COCOeval(truth, found_coco, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return Score(float(ev.stats[0]), float(ev.stats[1]), len(dataset), len(results))
