"""``StreamAnalytics``: what one stream derives over time from its detections.

One object per stream; ``update`` once per processed frame with that frame's detections
and its own time in seconds (its pts), and it returns the frame's tracks, the events it
caused and the running counts. Pure computation, no I/O, no settings read: the stream
that owns it builds it from its own config (``AnalyticsConfig``) and turns the result into
the detection message (``track_id``, ``predicted``, ``counts``) and event messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .events import ShapeEvents, reference_points
from .geometry import Line, Zone
from .tracker import Detections, Tracker, TrackerConfig, Tracks

__all__ = ["Analysis", "AnalyticsConfig", "StreamAnalytics"]


@dataclass(frozen=True)
class AnalyticsConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    #: Seconds of frame time a track must stay on the new side of a line (or in/out of a
    #: zone) before the change counts.
    min_side_s: float = 0.25


@dataclass(frozen=True)
class Analysis:
    """One frame's result: ``tracks`` (rows ``[:n_detections]`` are the frame's detections in
    input order), ``events`` (wire dicts, ``{"type": "event", ...}``), ``counts`` (None when
    the stream has no lines or zones)."""

    tracks: Tracks
    events: list[dict[str, Any]]
    counts: dict[str, Any] | None


class StreamAnalytics:
    """Tracker + lines + zones for one stream. Not thread-safe: the stream owns it."""

    def __init__(self, *, zones: Sequence[Zone] = (), lines: Sequence[Line] = (),
                 class_names: Sequence[str] = (), config: AnalyticsConfig | None = None) -> None:
        self.config = config or AnalyticsConfig()
        self.class_names = tuple(class_names)
        self.tracker = Tracker(self.config.tracker)
        self.shapes = ShapeEvents(zones, lines, class_names=self.class_names, min_side_s=self.config.min_side_s)

    def set_shapes(self, zones: Sequence[Zone], lines: Sequence[Line]) -> None:
        """New lines and zones (a ``config`` message, ``PATCH``): their counts start from zero;
        track ids carry on."""
        self.shapes = ShapeEvents(zones, lines, class_names=self.class_names, min_side_s=self.config.min_side_s)

    def update(self, dets: Detections, t: float, *, width: int, height: int, frame_id: int,
               pts: int | float | None = None, time: float | None = None) -> Analysis:
        """One frame at ``t`` seconds of stream time. ``pts`` (the frame's pts as the message
        carries it) and ``time`` (wall-clock seconds; ``t`` when None) are stamped on events."""
        tracks = self.tracker.update(dets, t)
        if self.shapes.empty:
            return Analysis(tracks, [], None)
        n = tracks.n_detections
        ids, cls, boxes = tracks.track_ids[:n], tracks.class_ids[:n], tracks.boxes[:n]
        seen = ids >= 0
        if not seen.all():   # only confirmed tracks count
            ids, cls, boxes = ids[seen], cls[seen], boxes[seen]
        stamp = {"frame_id": frame_id, "pts": pts, "time": t if time is None else time}
        events = self.shapes.update(ids, cls, reference_points(boxes, float(width), float(height)),
                                    t, tracks.removed, stamp)
        return Analysis(tracks, events, self.shapes.counts())

    def state_size(self) -> int:
        """Rows of state held (tracker + shapes): flat over a long run, for tests and gauges."""
        return len(self.tracker) + len(self.shapes)


def detections_of(boxes: Any, scores: Any, class_ids: Any) -> Detections:
    """Convenience: ``Detections`` from array-likes (lists from a detection message)."""
    return Detections.of(np.asarray(boxes, dtype=np.float64), scores, class_ids)
