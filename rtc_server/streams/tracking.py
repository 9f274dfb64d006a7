"""A stream's analytics, where its detection message is built (issue 21).

``StreamTracking`` owns the stream's ``StreamAnalytics`` (``rtc_server/analytics``: the
tracker, zones, lines) and follows the stream's settings: none while ``tracking`` is off,
a new one when it is turned on (ids start again), new shapes when zones or lines change
(their counts restart, track ids carry on). Per processed frame, ``annotate`` adds to the
detection message what the analytics found — ``track_id`` on every detection (null while
tentative), boxes predicted for confirmed tracks missed in this frame (``"predicted": true``),
``counts`` per line and zone — and returns the frame's events, each a message of its own.

It runs on the event loop, in ``Stream.deliver``: the whole update costs 0.26-0.44 ms
(median CPU time) at 50 boxes with 2 lines and 2 zones on this project's 2-vCPU VM
(``docs/tracking.md``), less than encoding the message, and nothing in it grows with a
client's bytes (zones and lines are capped when parsed).

**Time.** The motion model advances by the frame's own time: its ``pts`` in seconds (the
frame's ``time_base``, 1/90000 for RTP video when the frame says none). Where a source's
pts jumps backwards or far ahead (a pulled file looping, a sender restarting its clock),
the stream's time goes on from where it was by a nominal frame gap instead, so the tracker
never sees time run backwards. A frame with no pts advances by its arrival time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from ..analytics.stream import AnalyticsConfig, StreamAnalytics
from ..analytics.tracker import Detections
from ..engine.detector import DetectionResult
from .control import StreamSettings

#: RTP's video clock, for frames that carry no ``time_base``.
RTP_VIDEO_CLOCK = Fraction(1, 90000)
#: A pts step larger than this (seconds), or any step backwards, is a discontinuity.
MAX_PTS_STEP = 10.0
#: The step used across a discontinuity (seconds).
NOMINAL_STEP = 1.0 / 30


class StreamTracking:
    """Tracker + zones + lines of one stream, following its settings. Not thread-safe: the
    stream calls it from the event loop only."""

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        self.config = config or AnalyticsConfig()
        self.analytics: StreamAnalytics | None = None
        self._model: str | None = None
        self._shapes: Any = None
        self._last_raw: float | None = None
        self._offset = 0.0
        self._last_t: float | None = None

    def stream_time(self, pts: int | None, time_base: Any, arrived: float) -> float:
        """The frame's time in seconds on a clock that never runs backwards."""
        if pts is None:
            raw = arrived
        else:
            base = time_base if isinstance(time_base, (Fraction, int, float)) and time_base else RTP_VIDEO_CLOCK
            raw = float(pts * base)
        if self._last_raw is None or self._last_t is None:
            self._offset = 0.0
        else:
            step = raw - self._last_raw
            if step < 0 or step > MAX_PTS_STEP:
                self._offset = self._last_t + NOMINAL_STEP - raw
        self._last_raw = raw
        t = raw + self._offset
        self._last_t = t
        return t

    def _follow(self, settings: StreamSettings, model: str, class_names: Sequence[str]) -> StreamAnalytics | None:
        if not settings.tracking:
            self.analytics = None
            return None
        if self.analytics is None or self._model != model:
            self.analytics = StreamAnalytics(zones=settings.shapes.zones, lines=settings.shapes.lines,
                                             class_names=class_names, config=self.config)
            self._model, self._shapes = model, settings.shapes
        elif settings.shapes is not self._shapes:
            self.analytics.set_shapes(settings.shapes.zones, settings.shapes.lines)
            self._shapes = settings.shapes
        return self.analytics

    def annotate(self, message: dict[str, Any], result: DetectionResult, settings: StreamSettings, *,
                 pts: int | None, time_base: Any, arrived: float,
                 now: Callable[[], float]) -> list[dict[str, Any]]:
        """Add ``track_id``/``predicted``/``counts`` to ``message`` (built from ``result``);
        return the frame's events (none while tracking is off)."""
        analytics = self._follow(settings, result.model.name, result.model.class_names)
        if analytics is None:
            return []
        dets = result.detections
        detections = Detections.of(np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4),
                                   [d.score for d in dets], [d.class_id for d in dets])
        t = self.stream_time(pts, time_base, arrived)
        analysis = analytics.update(detections, t, width=result.width, height=result.height,
                                    frame_id=message.get("frame_id") or 0, pts=pts, time=round(now(), 3))
        tracks = analysis.tracks
        out = message["detections"]
        for entry, track_id in zip(out, tracks.track_ids[:tracks.n_detections].tolist(), strict=True):
            entry["track_id"] = track_id if track_id >= 0 else None
        names = result.model.class_names
        for i in range(tracks.n_detections, len(tracks.track_ids)):
            cls = int(tracks.class_ids[i])
            out.append({"box": [round(float(v), 2) for v in tracks.boxes[i]],
                        "score": round(float(tracks.scores[i]), 4),
                        "class_id": cls, "label": names[cls] if 0 <= cls < len(names) else str(cls),
                        "track_id": tracks.track_id(i), "predicted": True})
        if analysis.counts is not None:
            message["counts"] = analysis.counts
        return analysis.events

    def state_size(self) -> int:
        return 0 if self.analytics is None else self.analytics.state_size()
