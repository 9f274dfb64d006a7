"""Encoded still images (``POST /predict``) behind the same ``to_ndarray`` as video frames.

Decoding a JPEG costs milliseconds; wrapping the bytes lets ``InferenceService`` decode on
its worker thread (counted as preprocessing) instead of on the event loop.
"""

from __future__ import annotations

import cv2
import numpy as np


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image."""


class EncodedImage:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_ndarray(self, format: str = "rgb24") -> np.ndarray:  # noqa: A002 (PyAV's name)
        if format != "rgb24":
            raise ValueError(f"unsupported format {format!r}")
        if not self._data:
            raise ImageDecodeError("the body is empty")
        bgr = cv2.imdecode(np.frombuffer(self._data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageDecodeError("the body is not a decodable JPEG or PNG image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
