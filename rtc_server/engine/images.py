"""Encoded still images (``POST /predict``) behind the same ``to_ndarray`` as video frames.

Decoding a JPEG costs milliseconds; wrapping the bytes lets the ``Scheduler`` decode on
its worker thread (counted as preprocessing) instead of on the event loop.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image."""


class EncodedImage:
    """The bytes of a JPEG/PNG; ``size`` (from ``check_image``) lets the scheduler batch it
    with images of the same size without decoding it first."""

    def __init__(self, data: bytes, size: tuple[int, int] | None = None) -> None:
        self._data = data
        self.width: int | None = size[0] if size is not None else None
        self.height: int | None = size[1] if size is not None else None

    def to_ndarray(self, format: str = "rgb24") -> np.ndarray:  # noqa: A002 (PyAV's name)
        if format != "rgb24":
            raise ValueError(f"unsupported format {format!r}")
        if not self._data:
            raise ImageDecodeError("the body is empty")
        bgr = cv2.imdecode(np.frombuffer(self._data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageDecodeError("the body is not a decodable JPEG or PNG image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageSizeError(ImageDecodeError):
    """The image is too large (pixels) or too small to process; ``too_large`` says which."""

    def __init__(self, detail: str, *, too_large: bool) -> None:
        super().__init__(detail)
        self.too_large = too_large


#: Below this side nothing is detectable at the model's 32-pixel stride; the letterbox
#: would only upscale noise.
MIN_IMAGE_SIDE = 16


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Read ``(width, height)`` from the image header alone and enforce the size limits.

    Runs before any decoding: a 20000 x 20000 JPEG of a few hundred KB (a decompression
    bomb) would need 1.2 GB once decoded, so its size must be judged from the header.
    Pillow's ``Image.open`` is lazy: it parses the header and stops.
    """
    if not data:
        raise ImageDecodeError("the body is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard, far above ours
        raise ImageSizeError(f"the image is far too large: {exc}", too_large=True) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"the body is not a JPEG or PNG image: {exc}") from exc
    if kind not in ("JPEG", "PNG"):
        raise ImageDecodeError(f"the body is a {kind} image; send JPEG or PNG")
    if width * height > max_pixels:
        raise ImageSizeError(f"the image is {width}x{height} = {width * height} pixels; "
                             f"at most {max_pixels} are accepted", too_large=True)
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageSizeError(f"the image is {width}x{height}; each side must be at least "
                             f"{MIN_IMAGE_SIDE} pixels", too_large=False)
    return width, height
