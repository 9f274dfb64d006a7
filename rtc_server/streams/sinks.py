"""``Subscriber``: a stream sink for consumers that are not the sender — SSE and WebSocket.

The stream's ``publish`` must never wait for a consumer, and a consumer that reads slower
than detections are made (a dashboard on a poor link, a ``curl`` piped into something slow,
a client that stopped reading) must never grow the server's memory. So each subscriber has
a small bounded queue and the newest message wins: when it is full, the oldest queued
message is dropped and counted in ``lost``. A detection about a frame a second ago is
worth less than the one about the frame now, the same rule as the frame mailbox.

The transport (``rtc_server/signaling/events.py``) pumps ``next()`` into its connection; this module
knows nothing of HTTP. ``close()`` — called by the stream's one close path, or by the
server shutting down — ends the subscription: ``next()`` hands out what is still queued,
then raises ``SubscriptionEnded``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: Messages a subscriber may have queued; at 30 detections/s about one second's worth.
DEFAULT_QUEUE = 32


class SubscriptionEnded(Exception):
    """The subscription was closed and everything queued has been handed out."""


class Subscriber:
    def __init__(self, kind: str, maxsize: int = DEFAULT_QUEUE, on_lost: Callable[[], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("a subscriber queue holds at least one message")
        #: ``sse`` or ``ws``: shown in ``GET /sessions``.
        self.kind = kind
        self.maxsize = maxsize
        self.since = time.time()
        self.delivered = 0
        self.lost = 0
        self.closed = False
        #: Why the subscription ended when not because its stream did ("server shutting down").
        self.end_reason: str | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._on_close: list[Callable[[], None]] = []
        self._on_lost = on_lost  # e.g. a metrics counter

    # ----- the stream's side (Sink protocol) ---------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message``; never blocks. When full, the oldest queued message is lost."""
        if self.closed:
            return
        if len(self._queue) >= self.maxsize:
            self._queue.popleft()
            self.lost += 1
            if self._on_lost is not None:
                self._on_lost()
        self._queue.append(message)
        self._ready.set()

    def end(self, reason: str) -> None:
        """Close for a reason of the subscriber's own (its stream goes on)."""
        if not self.closed:
            self.end_reason = reason
        self.close()

    def close(self) -> None:
        """End the subscription (idempotent); wakes a waiting ``next()``."""
        if self.closed:
            return
        self.closed = True
        self._ready.set()
        for callback in self._on_close:
            callback()
        self._on_close.clear()

    # ----- the consumer's side -----------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the subscription is closed (at once if it already is)."""
        if self.closed:
            callback()
        else:
            self._on_close.append(callback)

    async def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The oldest queued message, waiting up to ``timeout`` s for one; None on timeout
        (the transport's cue for a keep-alive). Raises ``SubscriptionEnded`` once closed and
        drained."""
        while not self._queue:
            if self.closed:
                raise SubscriptionEnded
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        self.delivered += 1
        return self._queue.popleft()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "since": round(self.since, 3), "queued": self.queued,
                "delivered": self.delivered, "lost": self.lost}
