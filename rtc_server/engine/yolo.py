"""YOLO11 geometry and tensors: letterbox, preprocess, decode + NMS — no backend here.

These functions reproduce Ultralytics' own predict path (``LetterBox`` + ``non_max_suppression``
+ ``scale_boxes``) step for step, so the service's detections equal Ultralytics' for the
same image (see ``tests/test_parity.py``). Everything is vectorised: a Python loop over the
6300-8400 anchors of a frame would cost milliseconds on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Ultralytics' grey padding value.
PAD_VALUE = 114
#: Class offset for class-aware NMS in one pass (Ultralytics' ``max_wh``).
MAX_WH = 7680
#: Ultralytics keeps at most this many candidates before NMS.
MAX_NMS = 30000
#: Pixel scale to [0, 1], as the float32 ``to_blob`` applies it in.
_SCALE = np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class Letterbox:
    """Where a ``width x height`` image lands inside the model input.

    ``rect`` pads the short side only up to the next multiple of ``stride`` (less compute
    for 4:3 and 16:9 frames: 640x480 runs at 480x640); ``square`` pads to ``size x size``.
    """

    width: int
    height: int
    new_w: int
    new_h: int
    left: int
    top: int
    right: int
    bottom: int

    @classmethod
    def fit(cls, width: int, height: int, size: int = 640, rect: bool = True, stride: int = 32,
            shape: tuple[int, int] | None = None) -> Letterbox:
        """``shape`` = ``(H, W)`` of a static-shape model: letterbox to exactly that size
        (Ultralytics' ``LetterBox(new_shape=shape, auto=False)``); ``size``/``rect`` then do not apply."""
        out_h, out_w = shape if shape is not None else (size, size)
        r = min(out_h / height, out_w / width)
        new_w, new_h = round(width * r), round(height * r)
        dw, dh = out_w - new_w, out_h - new_h
        if rect and shape is None:
            dw, dh = dw % stride, dh % stride
        return cls(
            width=width,
            height=height,
            new_w=new_w,
            new_h=new_h,
            left=round(dw / 2 - 0.1),
            right=round(dw / 2 + 0.1),
            top=round(dh / 2 - 0.1),
            bottom=round(dh / 2 + 0.1),
        )

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.new_h + self.top + self.bottom, self.new_w + self.left + self.right

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize and pad an ``H x W x 3`` uint8 image to the model input size."""
        if (image.shape[1], image.shape[0]) != (self.new_w, self.new_h):
            image = cv2.resize(image, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)
        if self.top or self.bottom or self.left or self.right:
            image = cv2.copyMakeBorder(
                image, self.top, self.bottom, self.left, self.right,
                cv2.BORDER_CONSTANT, value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
            )
        return image

    def unmap(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``N x 4`` xyxy boxes from model-input pixels back to image pixels, clipped."""
        out = np.empty_like(boxes)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.left) / (self.new_w / self.width)
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.top) / (self.new_h / self.height)
        np.clip(out[:, [0, 2]], 0, self.width, out=out[:, [0, 2]])
        np.clip(out[:, [1, 3]], 0, self.height, out=out[:, [1, 3]])
        return out


def to_blob(padded_rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 RGB -> ``1 x 3 x H x W`` float32 in [0, 1] (one C++ pass)."""
    return cv2.dnn.blobFromImage(padded_rgb, scalefactor=1.0 / 255.0, swapRB=False)


def letterbox_into(image: np.ndarray, lb: Letterbox, out: np.ndarray) -> None:
    """Letterbox an ``H x W x 3`` uint8 RGB image straight into a model input slot.

    ``out`` is one image's ``3 x H x W`` float slice of a batch (``lb.input_hw``); it gets
    exactly ``to_blob(lb.apply(image))``. Why not that: it allocates a fresh blob (3.7 MB
    for 480x640) and a padded copy per frame, and fresh pages of that size are faulted in
    by the kernel on first write — measured here at ~3 ms of a 640x480 frame's ~3.7 ms of
    preprocessing. Writing into a buffer the caller reuses (``YoloDetector``) costs ~0.5 ms.
    """
    resized = image
    if (image.shape[1], image.shape[0]) != (lb.new_w, lb.new_h):
        resized = cv2.resize(image, (lb.new_w, lb.new_h), interpolation=cv2.INTER_LINEAR)
    bottom, right = lb.top + lb.new_h, lb.left + lb.new_w
    pad = _SCALE * np.float32(PAD_VALUE)
    out[:, :lb.top] = pad
    out[:, bottom:] = pad
    out[:, lb.top:bottom, :lb.left] = pad
    out[:, lb.top:bottom, right:] = pad
    # Plane by plane (contiguous reads: twice as fast as one multiply over the transposed
    # HWC view), then uint8 values * float32 scale, as blobFromImage computes: identical.
    region = out[:, lb.top:bottom, lb.left:right]
    for channel, plane in enumerate(cv2.split(resized)):
        region[channel] = plane
    region *= _SCALE



@dataclass(frozen=True)
class Thresholds:
    """Per-request filtering; sessions may change theirs live."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    #: Keep only these class ids; ``None`` keeps all.
    classes: frozenset[int] | None = None


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy IoU NMS (the same algorithm as ``torchvision.ops.nms``); indices of kept boxes.

    ``scores`` must already be sorted in descending order. The loop runs once per *kept*
    box (a handful per frame); each step is vectorised over the remaining candidates.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.arange(len(scores))
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def decode(output: np.ndarray, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``84 x A`` output -> (xyxy boxes in input pixels, scores, class ids).

    Results are in descending score order, at most ``max_det`` of them.
    """
    class_scores = output[4:]
    # max() down the class axis is a fast contiguous reduction; argmax() down it is ~7x
    # slower, so find the best class only for the few anchors that pass the confidence
    # threshold. Same result: argmax's first-maximum rule on a subset of the columns
    # (the retired bench decode_before_after, docs/benchmarks.md: identical arrays, 0.3 -> 0.09 ms per 640x480 frame).
    scores = class_scores.max(axis=0)
    mask = scores > thresholds.conf
    if not mask.any():
        return _empty()
    class_ids = class_scores[:, mask].argmax(axis=0)
    scores = scores[mask]
    cxcywh = output[:4, mask].T
    if thresholds.classes is not None:
        wanted = np.isin(class_ids, np.fromiter(thresholds.classes, dtype=np.int64))
        if not wanted.any():
            return _empty()
        cxcywh, scores, class_ids = cxcywh[wanted], scores[wanted], class_ids[wanted]
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    cxcywh, scores, class_ids = cxcywh[order], scores[order], class_ids[order]
    half = cxcywh[:, 2:] / 2
    boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
    offset = (class_ids * MAX_WH).astype(np.float32)[:, None]
    keep = nms(boxes + offset, scores, thresholds.iou)[: thresholds.max_det]
    return boxes[keep], scores[keep], class_ids[keep]
