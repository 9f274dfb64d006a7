"""``Stream``: one live video stream's state, free of any transport.

A *source* (a WebRTC peer from ``/offer``, later ``/whip`` or a pulled URL) pushes decoded
frames in; the stream keeps only the newest; the scheduler pulls it when a worker is free
and this stream's turn has come; the stream builds the detection message and hands it to
its *sinks* (the peer's data channel, SSE/WebSocket subscribers in ``sinks.py``)::

    source --push()--> FrameMailbox (newest wins) <--take()-- Scheduler (engine, shared)
                                                   --deliver()--> detection message --> every sink

A source with a thread of its own (a pulled URL) puts from that thread with
``push_threadsafe``: into the same one mailbox, so every source's frames pass exactly one
newest-wins slot and every view reports the one drop count.

The stream is a ``Lane`` of the scheduler (``peek``/``take``/``deliver``/``fail``): it
registers when it starts and leaves on close, and it has no task of its own for frames —
nothing per frame is queued anywhere, so the frame that runs is the newest at dispatch.
The stream owns what is the same whatever the transport: the mailbox and the counts,
the client's settings (thresholds, model, ``max_fps``), control messages and settings
changed over HTTP (``configure``), recent rates and latencies (``stats.py``), a reference
to its newest frame (for on-demand snapshots, ``snapshot.py``), message building, its
tasks, and the one close path every ending takes (peer gone, ICE failure, timeout, server
shutdown, a crashed task, DELETE). Closing leaves the scheduler, stops the source (bounded
in time), closes the sinks and tells the registry to forget the stream. It imports nothing
of aiortc or HTTP.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..engine.detector import DetectionResult
from ..engine.frames import DEFAULT_MAX_FRAME_PIXELS, Request, VideoFrameLike, check_frame_size, image_size
from ..engine.scheduler import Scheduler
from ..logs import SESSION_ID, session_logger
from ..metrics import Metrics
from ..ratelimit import TokenBucket
from .control import Config, ControlError, Report, StreamSettings, apply_config, parse_control
from .mailbox import FrameMailbox
from .messages import FrameCounts, detection_message, error_message
from .stats import StreamStats
from .tracking import StreamTracking

log = logging.getLogger(__name__)

class Source(Protocol):
    """Where a stream's frames come from. It calls ``Stream.push`` per decoded frame and
    ``Stream.close_soon`` when its transport ends."""

    #: ``offer`` (WebRTC via ``/offer``), ``whip`` or ``pull``.
    kind: str

    async def stop(self) -> None:
        """Release the transport (sockets, decoder threads). Called once, by ``Stream``."""
        ...


class EventSink(Protocol):
    """Where a stream's events go beyond its sinks (webhooks, MQTT: ``rtc_server/outputs``,
    built by the composition root). ``publish`` never blocks; it gets every event message
    and, when ``wants_detections``, every detection message too."""

    wants_detections: bool

    def publish(self, stream_id: str, message: dict[str, Any], webhooks: Sequence[Any] = ()) -> None:
        """``webhooks``: the stream's own receivers (``StreamWebhook``), besides the server's."""
        ...

    def check_webhook(self, url: str) -> None:
        """``ValueError`` saying why a stream may not name this webhook URL (the SSRF rules)."""
        ...


def check_outputs(settings: StreamSettings, events: EventSink | None) -> None:
    """``ControlError`` if ``settings`` name webhooks the event outputs refuse."""
    for i, hook in enumerate(settings.webhooks):
        if events is None:
            raise ControlError("this server delivers no webhooks")
        try:
            events.check_webhook(hook.url)
        except ValueError as exc:
            raise ControlError(f"webhooks[{i}]: {exc}") from exc


def _loggable(fields: dict[str, Any]) -> dict[str, Any]:
    """Settings as logged: zones, lines and webhooks by count only (webhooks carry secrets,
    geometry may be kilobytes)."""
    return {k: (f"<{len(v)}>" if isinstance(v, list) else v) if k in ("zones", "lines", "webhooks") else v
            for k, v in fields.items() if k != "type"}


class Sink(Protocol):
    """Where a stream's messages go. ``send`` never blocks: a sink that cannot keep up
    drops (and counts) rather than queue, because a stale detection is worth nothing."""

    def send(self, message: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StreamLimits:
    """How chatty a stream's clients may be, and how long its source may take to stop."""

    #: Control messages per second (burst: twice that); the rest are dropped.
    message_rate: float = 20.0
    #: Seconds a source may take to stop (e.g. aiortc closing a peer connection whose DTLS
    #: goodbye never gets through) before the stream closes without waiting for it.
    stop_timeout: float = 5.0
    #: Detections per second at most, whatever the client asks for (None: no cap).
    max_fps: float | None = None
    #: Largest decoded frame in pixels, whatever the source (``RTC_MAX_FRAME_PIXELS``): a
    #: larger frame ends the stream before it is converted, snapshotted or queued.
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS


@dataclass
class _SenderLimit:
    """One sender's control-message bucket, and whether it is flooding now."""

    bucket: TokenBucket
    flooding: bool = False


@dataclass(frozen=True)
class ReceivedFrame:
    frame_id: int
    frame: VideoFrameLike
    pts: int | None
    received_at: float


class Stream:
    def __init__(
        self,
        scheduler: Scheduler,
        settings: StreamSettings,
        metrics: Metrics,
        *,
        source_kind: str,
        on_closed: Callable[[Stream], Awaitable[None] | None] | None = None,
        limits: StreamLimits | None = None,
        stream_id: str | None = None,
        events: EventSink | None = None,
    ) -> None:
        #: New, or (a durable pull stream restored after a restart or a failover) the id it had.
        self.id = stream_id or uuid.uuid4().hex
        #: The scheduler's name for this lane (metrics, logs).
        self.name = self.id
        self.source_kind = source_kind
        self.log = session_logger(log, self.id)
        self.limits = limits or StreamLimits()
        #: What the client chose: thresholds, model, detection rate. Replaced, never mutated.
        self.settings = settings
        #: Why the stream ended, once it has: "connection closed", "no video", ...
        self.close_reason: str | None = None
        self.created_at = time.monotonic()
        #: Wall-clock creation time (``GET /sessions``).
        self.created_wall = time.time()
        self.source: Source | None = None
        #: Recent rates and latencies (``GET /sessions``); updated per frame, bounded.
        self.stats = StreamStats()
        #: The newest frame received, kept by reference for on-demand snapshots.
        self.latest_frame: ReceivedFrame | None = None
        self._scheduler = scheduler
        self._metrics = metrics
        self._on_closed = on_closed
        self._mailbox: FrameMailbox[ReceivedFrame] = FrameMailbox()
        self._receive_lock = threading.Lock()
        self._sinks: list[Sink] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.Task[None] | None = None
        #: Control-message buckets, one per sender (``origin``: the data channel, each
        #: WebSocket subscriber; None for a caller with no channel), and whether it floods.
        self._senders: dict[Sink | None, _SenderLimit] = {}
        self.processed = 0
        self._frame_failures = 0
        self._next_frame_id = 0
        self._peeked: tuple[ReceivedFrame, StreamSettings, Request] | None = None
        #: Tracks, zones, lines (issue 21): annotates each detection message, makes events.
        self.tracking = StreamTracking()
        self._events = events

    # ----- wiring --------------------------------------------------------------------------
    def attach(self, source: Source) -> None:
        self.source = source

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
        self._senders.pop(sink, None)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return tuple(self._sinks)

    def spawn(self, coro: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        """Run one of the stream's tasks (its own or its source's), supervised.

        The task runs in a context whose ``SESSION_ID`` is ours, so every log line written
        from it (ours, the engine's, aiortc's) carries the id. A task that dies of an
        unexpected exception closes the stream with reason ``internal_error`` (logged once
        with its traceback) instead of leaving a zombie that holds a slot.
        """
        context = contextvars.copy_context()
        context.run(SESSION_ID.set, self.id)
        task = asyncio.get_running_loop().create_task(coro, name=f"{role}-{self.id[:8]}", context=context)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.log.error("task %s failed; closing the stream", task.get_name(), exc_info=exc)
        self._metrics.count_error("session_internal_error")
        self.close_soon("internal_error")

    def count_error(self, kind: str) -> None:
        """``rtc_errors_total{kind}`` for something that went wrong in this stream or its source."""
        self._metrics.count_error(kind)

    def count_skipped(self, sink: str) -> None:
        """``rtc_sink_messages_skipped_total{sink}``: a sink dropped a message rather than queue it."""
        self._metrics.count_skipped(sink)

    def start(self) -> None:
        """Start having frames detected: join the scheduler's round-robin (the source
        starts pushing when its transport is up)."""
        if not self.closed:
            self._scheduler.register(self)

    # ----- frames in -----------------------------------------------------------------------
    def push(self, frame: VideoFrameLike, pts: int | None) -> None:
        """A decoded frame from the source, on the event loop; replaces any frame not yet taken.
        A frame over ``max_frame_pixels`` ends the stream instead (``frame_too_large``)."""
        too_large = self._too_large(frame)
        if too_large is not None:
            self._refuse_frame(too_large)
            return
        self._receive(frame, pts)
        self._arrived()

    def push_threadsafe(self, frame: VideoFrameLike, pts: int | None, loop: asyncio.AbstractEventLoop) -> bool:
        """A decoded frame from a source's own thread (a pull reader), straight into the
        stream's one mailbox: newest wins there, and its drop is counted there, once.

        The loop is woken (the scheduler notified) only when the frame found the mailbox
        empty; a frame that replaced one not yet taken needs no wake-up of its own — the
        scheduler already knows this stream has a frame waiting — so nothing is queued per
        frame, however busy the loop. False once the loop is gone (the server stopped).
        A frame over ``max_frame_pixels`` ends the stream (on the loop) and is not kept."""
        if self.closed:
            return True
        too_large = self._too_large(frame)
        if too_large is not None:
            try:
                loop.call_soon_threadsafe(self._refuse_frame, too_large)
            except RuntimeError:
                return False
            return True
        if self._receive(frame, pts):
            return True
        try:
            loop.call_soon_threadsafe(self._arrived)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _too_large(self, frame: VideoFrameLike) -> str | None:
        """Why this frame is over the cap (its size read from the frame, nothing converted),
        or None. The one check every source's frames pass, before anything keeps them."""
        size = image_size(frame)
        if size is None:
            return None
        return check_frame_size(size[0], size[1], self.limits.max_frame_pixels)

    def _refuse_frame(self, reason: str) -> None:
        """End the stream over a frame that is too large: its sinks are told why, once."""
        if self.closed:
            return
        self.log.warning("%s; closing the stream", reason)
        self._metrics.count_error("session_frame_too_large")
        self.publish(error_message("frame_too_large", reason))
        self.close_soon("frame too large")

    def _receive(self, frame: VideoFrameLike, pts: int | None) -> bool:
        """Number the frame, note it, put it in the mailbox; True if it replaced one."""
        with self._receive_lock:  # the frame ids and the stats: a source thread or the loop
            item = ReceivedFrame(self._next_frame_id, frame, pts, time.perf_counter())
            self._next_frame_id += 1
            self.latest_frame = item
            self.stats.received(item.received_at)
            dropped = self._mailbox.put(item)
        if dropped:
            self._metrics.frames_dropped.inc()
        self._metrics.frames_received.inc()
        return dropped

    def _arrived(self) -> None:
        if not self.closed:
            self._scheduler.notify()

    @property
    def counts(self) -> FrameCounts:
        return FrameCounts(self._mailbox.received, self.processed, self._mailbox.dropped)

    # ----- control -------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The name of the model this stream's frames run through now."""
        return self._scheduler.models.info(self.settings.model).name

    def configure(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Change settings from outside any channel (``PATCH /sessions/{id}``): the fields of
        a ``config`` control message, validated by the same ``apply_config``. Returns the
        config ack, which every sink also gets (the sender's page shows the new settings).
        Raises ``ControlError``."""
        settings = apply_config(self.settings, fields, self._scheduler.models.names, self._class_names)
        if settings.webhooks != self.settings.webhooks:
            check_outputs(settings, self._events)
        self.settings = settings
        ack = self.config_ack()
        self.log.info("settings changed over HTTP: %s", _loggable(fields))
        self.publish(ack)
        return ack

    def _class_names(self, model: str | None) -> tuple[str, ...]:
        return self._scheduler.models.info(model).class_names

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names of the model this stream's frames run through now."""
        return self._class_names(self.settings.model)

    def config_ack(self) -> dict[str, Any]:
        """The ``config`` message stating the settings in force (what a bare query answers)."""
        info = self._scheduler.models.info(self.settings.model)
        return Config(self.settings).ack(info.name, info.class_names)

    def control(self, raw: Any, origin: Sink | None = None) -> dict[str, Any] | None:
        """Apply one control message (JSON text); the reply for the channel it came on.

        ``origin`` is the sink of that channel, if any: a ``config`` ack goes back to it as
        the reply and to every other sink (subscribers see settings change) as a message.

        At most ``message_rate`` per second *per sender* (each ``origin`` has a bucket of its
        own, so a session-token holder flooding a WebSocket cannot starve the owner's data
        channel): a flood is answered with one ``rate_limited`` error and logged once; the
        messages beyond the rate are dropped (None) and counted. The flood counts as over
        once the sender has been quiet long enough for the whole burst to refill.
        """
        sender = self._senders.get(origin)
        if sender is None:
            if origin is not None and origin not in self._sinks:
                return None  # a channel that already left: nothing to answer on
            rate = self.limits.message_rate
            sender = self._senders[origin] = _SenderLimit(TokenBucket(rate, 2 * rate))
        if sender.flooding and sender.bucket.full:
            sender.flooding = False
        if sender.bucket.take() > 0:
            self._metrics.count_error("session_rate_limited")
            if sender.flooding:
                return None
            sender.flooding = True
            self.log.warning("control messages over %.0f/s: dropping until the client slows down",
                             self.limits.message_rate)
            return error_message("rate_limited", f"at most {self.limits.message_rate:g} "
                                 "control messages per second; the rest are dropped")
        try:
            decision = parse_control(raw, self.settings, self._scheduler.models.names, self._class_names)
            if isinstance(decision, Config) and decision.settings.webhooks != self.settings.webhooks:
                check_outputs(decision.settings, self._events)
        except ControlError as exc:
            self.log.info("bad control message: %s", exc)
            self._metrics.count_error("session_bad_message")
            return error_message("bad_message", str(exc))
        if isinstance(decision, Config):
            changed = decision.settings != self.settings
            self.settings = decision.settings
            ack = self.config_ack()
            if changed and origin is not None:
                self.publish(ack, skip=origin)
            return ack
        if isinstance(decision, Report):
            self.stats.reported_e2e(decision.e2e_ms)
            return None
        return {"type": "pong", "t": decision.t}

    # ----- the scheduler's lane: frames to the model, messages out --------------------------------
    @property
    def model(self) -> str | None:
        return self.settings.model

    @property
    def max_fps(self) -> float | None:
        """The rate the client asked for, under the server's cap: what the scheduler honours."""
        asked, cap = self.settings.max_fps, self.limits.max_fps
        return min(asked, cap) if asked and cap else (asked or cap)

    def peek(self) -> Request | None:
        """The newest frame not yet taken, as the scheduler's request (the frame stays)."""
        item = self._mailbox.peek()
        if item is None:
            return None
        settings = self.settings
        if self._peeked is None or self._peeked[0] is not item or self._peeked[1] is not settings:
            request = Request(item.frame, settings.thresholds, settings.model, item.received_at, tag=item)
            self._peeked = (item, settings, request)
        return self._peeked[2]

    def take(self) -> Request | None:
        """Called by the scheduler at dispatch: the newest frame at this moment (a source
        thread may have replaced the one ``peek`` showed; that one is counted as dropped)."""
        item = self._mailbox.take()
        peeked, self._peeked = self._peeked, None
        if item is None:
            return None
        settings = self.settings
        if peeked is not None and peeked[0] is item and peeked[1] is settings:
            return peeked[2]
        return Request(item.frame, settings.thresholds, settings.model, item.received_at, tag=item)

    def deliver(self, request: Request, result: DetectionResult) -> None:
        if self.closed:
            return
        item: ReceivedFrame = request.tag
        self.processed += 1
        done_at = time.perf_counter()
        self._metrics.observe(result, result.started_at - item.received_at, done_at - item.received_at)
        self.stats.processed(done_at, (done_at - item.received_at) * 1000)
        message = detection_message(result, received_at=item.received_at, done_at=done_at,
                                    frame_id=item.frame_id, pts=item.pts, counts=self.counts)
        events = self.tracking.annotate(message, result, self.settings,
                                        pts=item.pts, time_base=getattr(item.frame, "time_base", None),
                                        arrived=item.received_at, now=time.time)
        self.publish(message)
        if self._events is not None and self._events.wants_detections:
            self._events.publish(self.id, message)
        for event in events:
            self._metrics.events.labels(event["event"]).inc()
            self.publish(event)
            if self._events is not None:
                self._events.publish(self.id, event, self.settings.webhooks)

    def fail(self, request: Request, exc: Exception) -> None:
        if not self.closed:
            self._frame_failed(request.tag, exc)

    def _frame_failed(self, item: ReceivedFrame, exc: Exception) -> None:
        """A frame the pipeline could not process: skip it, keep the stream.

        Logged with its traceback the first time, counted always (``session_frame_failed``)
        and reported to the client, so a stream of bad frames is visible without flooding
        the log.
        """
        self._frame_failures += 1
        self._metrics.count_error("session_frame_failed")
        if self._frame_failures == 1:
            self.log.error("frame %d (%s) could not be processed; skipping it", item.frame_id,
                           type(exc).__name__, exc_info=exc)
            self.publish(error_message("frame_failed", f"frame {item.frame_id} could not be processed: "
                                       f"{type(exc).__name__}"))

    def publish(self, message: dict[str, Any], skip: Sink | None = None) -> None:
        for sink in list(self._sinks):
            if sink is not skip:
                sink.send(message)

    # ----- the one way out -------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closing is not None

    def close_soon(self, reason: str = "closed") -> None:
        """Start closing from a synchronous callback; idempotent (the first reason wins)."""
        if self._closing is None:
            self.close_reason = reason
            self._closing = asyncio.ensure_future(self._close())

    async def close(self, reason: str = "closed by server") -> None:
        self.close_soon(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        """Every step runs whatever an earlier one raised, and the registry always forgets
        the stream: a raising sink or source must not leak the session's slot (issue 20).
        Each failure is logged once, with its traceback, and counted."""
        try:
            await self._close_steps()
        finally:
            if self._on_closed is not None:
                try:
                    outcome = self._on_closed(self)
                    if outcome is not None:
                        await outcome
                except Exception:
                    self.log.error("forgetting the closed stream failed", exc_info=True)
                    self._metrics.count_error("session_close_failed")

    def _close_step(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            self.log.warning("%s failed while closing; going on", what, exc_info=True)
            self._metrics.count_error("session_close_failed")

    async def _close_steps(self) -> None:
        self._close_step("leaving the scheduler", lambda: self._scheduler.unregister(self))
        self._close_step("closing the mailbox", self._mailbox.close)
        self._peeked = None
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self.source is not None:
            try:
                async with asyncio.timeout(self.limits.stop_timeout):
                    await self.source.stop()
            except TimeoutError:
                self.log.warning("the %s source did not stop within %.1f s; leaving it", self.source.kind,
                                 self.limits.stop_timeout)
                self._metrics.count_error("session_close_timeout")
            except Exception:
                # e.g. aiortc failing to close a connection left half-built by a malformed
                # offer (found by the fuzz tests): the stream must still leave the registry.
                self.log.warning("the %s source failed while stopping", self.source.kind, exc_info=True)
                self._metrics.count_error("session_close_failed")
        for sink in list(self._sinks):
            self._close_step(f"sink {getattr(sink, 'name', type(sink).__name__)}", sink.close)
        self._sinks.clear()
        self.latest_frame = None
        counts = self.counts
        self._metrics.sessions_closed.labels((self.close_reason or "closed").replace(" ", "_")).inc()
        self.log.info("closed: %s (%d received, %d processed, %d dropped)",
                      self.close_reason, counts.received, counts.processed, counts.dropped)
