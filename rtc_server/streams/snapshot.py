"""On-demand JPEG snapshots of a stream's newest frame (``GET /sessions/{id}/snapshot.jpg``).

The stream keeps a reference to its newest received frame (no copy per frame); a JPEG is
encoded only when someone asks, in a thread of its own (never on the event loop, never in
the inference thread), at most ``rate`` encodes per second per stream. Asking again for a
frame already encoded returns the cached JPEG without spending the budget, so several
viewers of one stream cost one encode per new frame.

Why the frame is read without ``VideoFrame.reformat``: PyAV's reformat keeps one swscale
context per frame and rewrites the *source* frame's colour tags while it converts, with the
GIL released. The inference thread may be converting the very same frame at that moment, so
the snapshot thread reads the planes (``to_ndarray()`` without a format copies them as they
are) and converts with OpenCV instead — read-only on the shared frame.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..ratelimit import TokenBucket
from .stream import ReceivedFrame, Stream


class NoFrameYet(LookupError):
    """The stream has not received a frame yet."""


class SnapshotRateLimited(RuntimeError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"snapshot rate exceeded; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class UnsupportedFrame(ValueError):
    """A pixel format the snapshot encoder cannot convert."""


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    frame_id: int
    pts: int | None
    width: int
    height: int


def _plane(plane: Any, rows: int, cols: int) -> np.ndarray:
    """One 8-bit plane as a (rows, cols) view, line padding cut off."""
    data = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return data[:rows, :cols]


def to_bgr(frame: Any) -> np.ndarray:
    """A BGR array of ``frame`` (an RGB ``ndarray`` or a PyAV ``VideoFrame``), read-only on it."""
    if isinstance(frame, np.ndarray):
        return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    name = frame.format.name
    if name in ("yuv420p", "yuvj420p"):
        # Even sizes only for I420; an odd last row/column (641x479 happens) is left out.
        h, w = frame.height & ~1, frame.width & ~1
        y, u, v = (_plane(p, rows, cols) for p, rows, cols in
                   zip(frame.planes, (h, h // 2, h // 2), (w, w // 2, w // 2), strict=True))
        i420 = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)
        return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    conversions = {"nv12": cv2.COLOR_YUV2BGR_NV12, "rgb24": cv2.COLOR_RGB2BGR, "gray": cv2.COLOR_GRAY2BGR,
                   "rgba": cv2.COLOR_RGBA2BGR, "bgra": cv2.COLOR_BGRA2BGR}
    if name == "bgr24":
        return frame.to_ndarray()
    if name in conversions:
        return cv2.cvtColor(frame.to_ndarray(), conversions[name])
    raise UnsupportedFrame(f"no snapshot for pixel format {name}")


def encode_jpeg(frame: Any, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", to_bgr(frame), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UnsupportedFrame("OpenCV could not encode the frame")
    return data.tobytes()


class _PerStream:
    def __init__(self, rate: float) -> None:
        self.bucket = TokenBucket(rate, max(1.0, rate))
        self.cached: Snapshot | None = None
        self.pending: tuple[int, asyncio.Future[Snapshot]] | None = None


class Snapshots:
    """The process's snapshot encoder: one thread, per-stream budgets and caches."""

    def __init__(self, rate: float, quality: int = 80) -> None:
        self.rate, self.quality = rate, quality
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        # Forgotten with the stream itself: no bookkeeping on the close path.
        self._streams: weakref.WeakKeyDictionary[Stream, _PerStream] = weakref.WeakKeyDictionary()

    async def jpeg(self, stream: Stream) -> Snapshot:
        """The newest frame of ``stream`` as JPEG. Raises ``NoFrameYet``,
        ``SnapshotRateLimited`` or ``UnsupportedFrame``."""
        item = stream.latest_frame
        if item is None:
            raise NoFrameYet(f"session {stream.id} has not received a frame yet")
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _PerStream(self.rate)
        if state.cached is not None and state.cached.frame_id == item.frame_id:
            return state.cached
        if state.pending is not None and state.pending[0] == item.frame_id:
            return await asyncio.shield(state.pending[1])
        wait = state.bucket.take()
        if wait > 0:
            raise SnapshotRateLimited(wait)
        future = asyncio.ensure_future(self._encode(item))
        state.pending = (item.frame_id, future)
        try:
            snapshot = await asyncio.shield(future)
        finally:
            if state.pending is not None and state.pending[1] is future:
                state.pending = None
        state.cached = snapshot
        return snapshot

    async def _encode(self, item: ReceivedFrame) -> Snapshot:
        loop = asyncio.get_running_loop()
        jpeg = await loop.run_in_executor(self._executor, encode_jpeg, item.frame, self.quality)
        width, height = _size(item.frame)
        return Snapshot(jpeg, item.frame_id, item.pts, width, height)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _size(frame: Any) -> tuple[int, int]:
    if isinstance(frame, np.ndarray):
        return frame.shape[1], frame.shape[0]
    return frame.width, frame.height
