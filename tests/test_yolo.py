"""Letterbox geometry, decode and NMS on synthetic data (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from rtc_server.engine.yolo import Letterbox, Thresholds, decode, letterbox_into, nms, to_blob


def test_rect_letterbox_keeps_4_3_frames_unpadded() -> None:
    lb = Letterbox.fit(640, 480, 640, rect=True)
    assert lb.input_hw == (480, 640)
    assert (lb.left, lb.top, lb.right, lb.bottom) == (0, 0, 0, 0)


def test_square_letterbox_pads_to_size() -> None:
    lb = Letterbox.fit(1280, 720, 640, rect=False)
    assert lb.input_hw == (640, 640)
    assert (lb.new_w, lb.new_h) == (640, 360)
    assert (lb.top, lb.bottom) == (140, 140)


def test_rect_letterbox_pads_to_multiple_of_32() -> None:
    lb = Letterbox.fit(641, 479, 640, rect=True)
    h, w = lb.input_hw
    assert h % 32 == 0 and w % 32 == 0
    assert lb.apply(np.zeros((479, 641, 3), np.uint8)).shape == (h, w, 3)


def test_unmap_inverts_letterbox() -> None:
    lb = Letterbox.fit(1280, 720, 640, rect=False)
    boxes = np.array([[0.0, 140.0, 640.0, 500.0]], np.float32)
    np.testing.assert_allclose(lb.unmap(boxes), [[0, 0, 1280, 720]], atol=1e-3)


def test_nms_suppresses_overlaps_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]


def _output(rows: list[tuple[float, float, float, float, int, float]], anchors: int = 50) -> np.ndarray:
    out = np.zeros((84, anchors), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[:4, i] = (cx, cy, w, h)
        out[4 + cls, i] = score
    return out


def test_decode_is_class_aware_and_sorted() -> None:
    # Two identical boxes of different classes both survive; a same-class duplicate does not.
    out = _output([(50, 50, 20, 20, 0, 0.6), (50, 50, 20, 20, 5, 0.9), (51, 50, 20, 20, 0, 0.5)])
    boxes, scores, classes = decode(out, Thresholds())
    assert classes.tolist() == [5, 0]
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])


def test_decode_thresholds_and_class_filter() -> None:
    out = _output([(50, 50, 20, 20, 0, 0.6), (150, 50, 20, 20, 2, 0.3)])
    assert decode(out, Thresholds(conf=0.5))[2].tolist() == [0]
    assert decode(out, Thresholds(classes=frozenset({2})))[2].tolist() == [2]
    assert decode(out, Thresholds(conf=0.99))[0].shape == (0, 4)


@pytest.mark.parametrize(
    ("width", "height", "kwargs"),
    [
        (640, 480, {}),  # rect, no resize, no padding: the camera's common case
        (1280, 720, {}),  # downscale, rect padding top and bottom
        (1280, 720, {"rect": False}),  # square padding
        (300, 500, {}),  # upscale, padding left and right
        (640, 480, {"shape": (640, 640)}),  # a static-shape model
        (333, 177, {"size": 320, "rect": False}),  # odd sizes, uneven padding
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_letterbox_into_equals_the_fresh_blob(width: int, height: int, kwargs: dict, dtype: type) -> None:
    """The reused-buffer path writes exactly what letterbox + blobFromImage produce, over
    whatever a buffer held before (padding bands included)."""
    rng = np.random.default_rng(width * height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    lb = Letterbox.fit(width, height, **kwargs)
    expected = to_blob(lb.apply(image))[0].astype(dtype)
    out = np.full((3, *lb.input_hw), np.nan, dtype)  # stale contents must all be overwritten
    letterbox_into(image, lb, out)
    np.testing.assert_array_equal(out, expected)
