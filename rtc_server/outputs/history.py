"""The event history (issue 22): every stream's line and zone events written to the durable
store in batches, so that ``GET /events`` on any replica can read them back.

An output beside webhooks and MQTT (``fanout.EventOutputs``): ``publish`` only appends to a
bounded queue; one task writes what is queued through the ``write`` callable the composition
root hands in (``Store.add_events`` behind it: this package knows no store), either when
``batch`` events wait or ``interval_s`` after the first of them, whichever comes first.

- **Per event, never per frame**: detection messages are ignored (``wants_detections`` is
  False); one transaction per batch.
- **Bounded**: ``queue`` events wait at most; beyond it the oldest is dropped and counted
  (``rtc_events_history_dropped_total{reason="queue_full"}``).
- **A database away costs counted drops, never a stream**: a batch whose write fails (the
  store's own bound, ``operation_timeout_s``, ends a hung one) is dropped and counted
  (``reason="write_failed"``), logged once per outage; the next batch tries again.
- **Shutdown**: ``close`` (called by the root after the streams closed, before the store
  closes) writes what is still queued, then stops; with the database away, the first batch
  that fails drops (and counts) the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..metrics import Metrics

log = logging.getLogger(__name__)

#: The event kinds the analytics make (``docs/tracking.md``); other messages are not history.
EVENT_TYPES = ("line_cross", "zone_enter", "zone_exit")


@dataclass(frozen=True)
class HistoryEvent:
    """One event to keep: the stream it happened in, its kind, when (the event's own
    wall-clock ``time``) and the event message as the sinks got it."""

    stream_id: str
    type: str
    time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class HistoryConfig:
    #: Events waiting at most; the oldest is dropped (counted) beyond it.
    queue: int = 10_000
    #: Events written in one transaction at most; this many waiting are written at once.
    batch: int = 500
    #: Seconds the first queued event waits at most before it is written.
    interval_s: float = 1.0


#: Writes one batch (the root: ``Store.add_events``); raises when it could not.
WriteEvents = Callable[[Sequence[HistoryEvent]], Awaitable[object]]


def event_time(message: dict[str, Any]) -> datetime:
    """The event's ``time`` (wall-clock seconds, ``streams/tracking.py``) as an aware UTC
    datetime; now when it has none that makes sense."""
    value = message.get("time")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return datetime.fromtimestamp(float(value), UTC)
    return datetime.now(UTC)


class EventHistory:
    """See the module's docstring."""

    wants_detections = False

    def __init__(self, write: WriteEvents, config: HistoryConfig | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config or HistoryConfig()
        self._write = write
        self._metrics = metrics
        self._queue: deque[HistoryEvent] = deque()
        #: Set when something is queued (the writer waits for it when idle).
        self._pending = asyncio.Event()
        #: Set when ``batch`` events wait (the writer stops waiting for the interval).
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False
        #: Events written and dropped since start (tests and logs; Prometheus has the same).
        self.written = 0
        self.dropped = 0

    # ----- the EventSink side --------------------------------------------------------------
    def publish(self, stream_id: str, message: dict[str, Any], webhooks: Sequence[Any] = ()) -> None:
        """Queue an event message (anything else is not history); never blocks."""
        kind = message.get("event")
        if message.get("type") != "event" or kind not in EVENT_TYPES or self._closed:
            return
        if len(self._queue) >= self.config.queue:
            self._queue.popleft()
            self._drop("queue_full")
        self._queue.append(HistoryEvent(stream_id, str(kind), event_time(message), dict(message)))
        self._pending.set()
        if len(self._queue) >= self.config.batch:
            self._full.set()

    @property
    def queued(self) -> int:
        """Events waiting to be written."""
        return len(self._queue)

    # ----- lifetime -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer (idempotent: the root starts it with the store, the outputs again)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="event-history")

    async def close(self) -> None:
        """Stop taking events, write what is queued (each batch bounded by the store's own
        operation timeout; after a batch that failed the rest is dropped and counted, so a
        database away costs shutdown one bound, not one per batch), stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.set()  # the writer wakes, writes what is left without waiting, and ends
        self._full.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued now (``close``); stop at a batch that fails, dropping
        (and counting) what is left."""
        while self._queue:
            if not await self._flush():
                self._drop("write_failed", len(self._queue))
                self._queue.clear()

    # ----- the writer ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            if not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.config.interval_s)
            written = await self._flush()
            if self._closed and not written:
                self._drop("write_failed", len(self._queue))
                self._queue.clear()
            if self._closed and not self._queue:
                return

    async def _flush(self) -> bool:
        """Write the next batch; False if the store did not take it (dropped, counted)."""
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.config.batch))]
        if len(self._queue) < self.config.batch:
            self._full.clear()
        if not self._queue:
            self._pending.clear()
        if not batch:
            return True
        try:
            await self._write(batch)
        except asyncio.CancelledError:
            self._drop("write_failed", len(batch))
            raise
        except Exception as error:  # the database away (StoreError) or a row it refused
            self._drop("write_failed", len(batch))
            if not self._failing:
                log.warning("event history: %d event(s) could not be written and were dropped (%s); "
                            "dropping and counting until the store answers again", len(batch), error)
            self._failing = True
            return False
        if self._failing:
            log.info("event history: the store answers again")
            self._failing = False
        self.written += len(batch)
        if self._metrics is not None:
            self._metrics.history_written.inc(len(batch))
        return True

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        if self._metrics is not None:
            self._metrics.history_dropped.labels(reason).inc(n)
