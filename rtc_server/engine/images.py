"""Encoded still images (``POST /predict``) behind the same ``to_ndarray`` as video frames.

Decoding a JPEG costs milliseconds; wrapping the bytes lets the ``Scheduler`` decode on
its worker thread (counted as preprocessing) instead of on the event loop. Before that,
``check_image`` reads the size from the header alone (a bounded walk, whatever the bytes),
and ``ImageChecks`` runs it off the loop for large bodies, under a bound.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np


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

#: JPEG segments read before the frame header (SOF) at most. A camera's JPEG has a handful
#: (APPn for EXIF/ICC/XMP, DQT, DHT, DRI); an extended-XMP or multi-chunk ICC file a few
#: dozen. The cap bounds the header walk however the bytes were made.
MAX_JPEG_SEGMENTS = 256

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Markers without a length field (TEM, RSTn, SOI).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_FILL = re.compile(rb"\xff+")
#: Bytes one C-speed scan looks at before Python runs again (and may hand the GIL over).
_WINDOW = 64 * 1024


def _skip_fill(data: bytes, pos: int) -> int:
    """The first position at or after ``pos`` that is not an 0xFF fill byte."""
    size = len(data)
    while pos < size:
        end = min(size, pos + _WINDOW)
        fill = _FILL.match(data, pos, end)
        if fill is None or fill.end() < end:
            return pos if fill is None else fill.end()
        pos = end
    return size


def _find_marker(data: bytes, pos: int) -> int:
    """The next 0xFF at or after ``pos``, or -1."""
    size = len(data)
    while pos < size:
        end = min(size, pos + _WINDOW)
        found = data.find(b"\xff", pos, end)
        if found >= 0:
            return found
        pos = end
    return -1


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's frame header, walking its segments by their lengths.

    Bounded whatever the bytes: at most ``MAX_JPEG_SEGMENTS`` segments, and fill or stray
    bytes are skipped by ``re``/``bytes.find`` in 64 KiB windows (one pass over the body at
    most, at C speed, never byte by byte in Python). Pillow's own header reader walks junk
    one byte per Python iteration: 16 MiB of 0xFF bytes took it 35 s of CPU (issue 20)."""
    pos, size = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos >= size:
            break
        if data[pos] != 0xFF:  # stray bytes between segments (libjpeg skips them too)
            pos = _find_marker(data, pos)
            if pos < 0:
                break
        pos = _skip_fill(data, pos)
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            raise ImageDecodeError("the body is not a JPEG image: no frame header before the image data")
        if pos + 2 > size:
            break
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            raise ImageDecodeError(f"the body is not a JPEG image: a segment of length {length}")
        if marker in _SOF_MARKERS:
            if length < 8 or pos + 7 > size:
                break
            height = int.from_bytes(data[pos + 3:pos + 5], "big")
            width = int.from_bytes(data[pos + 5:pos + 7], "big")
            return width, height
        pos += length
    else:
        raise ImageDecodeError(f"the body is not a JPEG image this server reads: more than {MAX_JPEG_SEGMENTS} "
                               "segments before its frame header")
    raise ImageDecodeError("the body is not a JPEG image: it ends before its frame header")


def _png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR, which must be its first chunk (fixed offset)."""
    if len(data) < 33 or data[12:16] != b"IHDR" or int.from_bytes(data[8:12], "big") != 13:
        raise ImageDecodeError("the body is not a PNG image: no IHDR chunk after the signature")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Read ``(width, height)`` from the image header alone and enforce the size limits.

    Runs before any decoding: a 20000 x 20000 JPEG of a few hundred KB (a decompression
    bomb) would need 1.2 GB once decoded, so its size must be judged from the header. The
    header is read by a bounded walk of our own (``_jpeg_size``, ``_png_size``) rather than
    Pillow's, whose cost grows with the junk a client puts before the frame header.
    """
    if not data:
        raise ImageDecodeError("the body is empty")
    if data[:3] == b"\xff\xd8\xff":
        width, height = _jpeg_size(data)
    elif data[:8] == _PNG_SIGNATURE:
        width, height = _png_size(data)
    else:
        raise ImageDecodeError("the body is not a JPEG or PNG image")
    if width * height > max_pixels:
        raise ImageSizeError(f"the image is {width}x{height} = {width * height} pixels; "
                             f"at most {max_pixels} are accepted", too_large=True)
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageSizeError(f"the image is {width}x{height}; each side must be at least "
                             f"{MIN_IMAGE_SIDE} pixels", too_large=False)
    return width, height


class ChecksBusy(RuntimeError):
    """Every image-check slot is taken; the client should retry after ``retry_after`` s."""

    def __init__(self, in_flight: int, retry_after: int = 1) -> None:
        super().__init__(f"{in_flight} images are already being checked; retry shortly")
        self.retry_after = retry_after


class ImageChecks:
    """``check_image`` off the event loop: a small executor of its own and a bound.

    A body of at most ``inline_bytes`` is checked where it is (the walk is bounded and the
    bytes few: well under a millisecond); a larger one on one of ``workers`` threads, with
    at most ``max_in_flight`` checks running or waiting — beyond that ``ChecksBusy`` at once,
    so a burst of large junk bodies neither piles up nor multiplies a stall. Its own threads,
    not the loop's default executor or the inference workers: a flood of checks delays
    neither DNS lookups nor detections.
    """

    def __init__(self, workers: int = 2, max_in_flight: int = 16, inline_bytes: int = 256 * 1024) -> None:
        if workers < 1 or max_in_flight < 1:
            raise ValueError("image checks need at least one worker and one slot")
        self.max_in_flight = max_in_flight
        self.inline_bytes = inline_bytes
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-check")

    async def check(self, data: bytes, max_pixels: int) -> tuple[int, int]:
        """``check_image(data, max_pixels)``; raises its errors, or ``ChecksBusy``."""
        if len(data) <= self.inline_bytes:
            return check_image(data, max_pixels)
        if self.in_flight >= self.max_in_flight:
            raise ChecksBusy(self.in_flight)
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, check_image, data, max_pixels)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
