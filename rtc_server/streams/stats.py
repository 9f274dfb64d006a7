"""``StreamStats``: a stream's recent rates and latencies, for ``GET /sessions`` and dashboards.

Prometheus (``/metrics``) has the server-wide histograms; this answers "how is *this*
stream doing right now": frames received and detections made per second over the last few
seconds, the median ``server_ms`` of those detections and — where a client reports it —
the median frame-matched end-to-end latency (only the sender can match a frame's send time
to its detections; the page reports its figure with a ``report`` control message).

Cheap and bounded: the stream adds one timestamp per received frame and one pair per
detection to fixed-length deques; the summary, computed only when asked, looks at the
entries inside the window.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: Seconds the rates and medians look back over.
WINDOW_S = 5.0
#: Entries kept per series: WINDOW_S at 240 frames/s (``control.MAX_FPS``), a hard memory bound.
MAX_ENTRIES = 1200


class _Window:
    """``(t, value)`` pairs of the last ``MAX_ENTRIES`` events; old ones age out on read.

    Locked: a pull source's reader thread adds its received frames while the event loop
    reads the window (iterating a deque another thread appends to raises)."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, float]] = deque(maxlen=MAX_ENTRIES)
        self._lock = threading.Lock()

    def add(self, t: float, value: float = 0.0) -> None:
        with self._lock:
            self._entries.append((t, value))

    def recent(self, now: float, window: float) -> list[tuple[float, float]]:
        start = now - window
        with self._lock:
            return [e for e in self._entries if e[0] >= start]


def _rate(entries: list[tuple[float, float]], now: float, window: float, since: float) -> float:
    """Events per second over the window (or over the stream's life when younger)."""
    span = min(window, now - since)
    return round(len(entries) / span, 2) if span > 0 else 0.0


def _median(entries: list[tuple[float, float]]) -> float | None:
    return round(statistics.median(v for _, v in entries), 2) if entries else None


class StreamStats:
    def __init__(self, clock: Callable[[], float] = time.perf_counter, window: float = WINDOW_S) -> None:
        self._clock = clock
        self.window = window
        self._started = clock()
        self._received = _Window()
        self._processed = _Window()  # value: server_ms
        self._e2e = _Window()  # value: a client-reported end-to-end latency, ms

    def received(self, t: float) -> None:
        self._received.add(t)

    def processed(self, t: float, server_ms: float) -> None:
        self._processed.add(t, server_ms)

    def reported_e2e(self, e2e_ms: float) -> None:
        self._e2e.add(self._clock(), e2e_ms)

    def summary(self) -> dict[str, Any]:
        """``{"window_s", "received_fps", "processed_fps", "server_ms_p50", "e2e_ms_p50"}``;
        a median is None when nothing in the window gave one."""
        now = self._clock()
        received = self._received.recent(now, self.window)
        processed = self._processed.recent(now, self.window)
        return {
            "window_s": self.window,
            "received_fps": _rate(received, now, self.window, self._started),
            "processed_fps": _rate(processed, now, self.window, self._started),
            "server_ms_p50": _median(processed),
            "e2e_ms_p50": _median(self._e2e.recent(now, self.window)),
        }
