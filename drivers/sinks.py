"""A stream sink for tests and benchmarks: keep every message with the moment it was sent.

A WHIP session has no data channel: its detections go to whatever sinks the stream has.
Until the SSE endpoint (``GET /sessions/{id}/events``) is there to read them over HTTP,
tests and benches that run the server in their own process attach this sink through the
registry (``registry.get(id).add_sink(CollectingSink())``) and read the detections on the
server side, at the moment the stream publishes them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class CollectingSink:
    """Records ``(perf_counter, message)`` for every message; never blocks the stream."""

    def __init__(self, limit: int = 100_000) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.closed = False
        self._limit = limit
        self._changed = asyncio.Event()

    def send(self, message: dict[str, Any]) -> None:
        if len(self.messages) < self._limit:
            self.messages.append((time.perf_counter(), message))
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    @property
    def detections(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.messages if m.get("type") == "detections"]

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[float, dict[str, Any]]]:
        """Until ``count`` detection messages have arrived (or the stream closed)."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if len(self.detections) >= count or self.closed:
                    break
                await self._changed.wait()
        return self.detections
