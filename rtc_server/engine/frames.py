"""What flows into the engine: frames and images, requests, and the lanes that hand them over.

The vocabulary every source and stream shares with the scheduler, in a module of its
own so that naming a frame (``webrtc/``, ``ingest/``, ``streams/``) does not import the
scheduler. A **lane** is a requester the scheduler *pulls* from (a live stream, the
``/predict`` queue); a **request** is one image a lane hands over at dispatch time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .detector import DetectionResult
from .yolo import Thresholds


class VideoFrameLike(Protocol):
    """What we need of an ``av.VideoFrame``; converting it is part of preprocessing."""

    def to_ndarray(self, format: str) -> np.ndarray: ...  # noqa: A002 (PyAV's name)


Image = np.ndarray | VideoFrameLike


def image_size(image: Image) -> tuple[int, int] | None:
    """``(width, height)`` without decoding, when the image says it (arrays, video frames,
    ``EncodedImage``); None otherwise. Images batch only with images of the same size."""
    if isinstance(image, np.ndarray):
        return int(image.shape[1]), int(image.shape[0])
    width, height = getattr(image, "width", None), getattr(image, "height", None)
    return (int(width), int(height)) if isinstance(width, int) and isinstance(height, int) else None


#: 4K UHD (3840x2160) fits; anything with more pixels is refused (``RTC_MAX_FRAME_PIXELS``).
DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160


def check_frame_size(width: int, height: int, max_pixels: int) -> str | None:
    """Why a ``width`` x ``height`` frame is refused, or None if it fits. Cheap: call it on
    every decoded frame, before converting it (every source's frames pass it in the stream
    core; the pull reader checks it early too)."""
    if width <= 0 or height <= 0:
        return f"the frame has no size ({width}x{height})"
    if width * height > max_pixels:
        return (f"the frame is {width}x{height} ({width * height} pixels), over the cap of {max_pixels} pixels "
                "(RTC_MAX_FRAME_PIXELS)")
    return None


@dataclass(frozen=True)
class Request:
    """One image to detect in, as a lane hands it over."""

    image: Image
    thresholds: Thresholds
    #: A model of the catalog; None: the default.
    model: str | None
    #: ``perf_counter`` when the image arrived (frame received, request admitted).
    arrived_at: float
    #: The lane's own token, handed back with the result (e.g. which frame this was).
    tag: Any = None


class Lane(Protocol):
    """A requester the scheduler pulls from: a live stream, seen through four methods.

    ``peek`` and ``take`` are called on the event loop at dispatch time, one right after
    the other, so the request taken is the one peeked: the newest at that moment.
    """

    #: For metrics and logs (a stream's id).
    name: str

    @property
    def model(self) -> str | None:
        """The model this lane's images go to (None: the default); batches are per model."""
        ...

    @property
    def max_fps(self) -> float | None:
        """At most this many dispatches per second for this lane; None: no cap."""
        ...

    def peek(self) -> Request | None:
        """The newest image not yet taken (None: nothing new), without taking it."""
        ...

    def take(self) -> Request | None:
        """Take the newest image not yet taken; a later one replaces it, not follows it."""
        ...

    def deliver(self, request: Request, result: DetectionResult) -> None:
        """The detections for a taken request (called on the event loop)."""
        ...

    def fail(self, request: Request, exc: Exception) -> None:
        """A taken request could not be processed (called on the event loop)."""
        ...
