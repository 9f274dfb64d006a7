"""``PeerSession``: one browser or program's peer connection, from offer to teardown.

Data path inside a session::

    track.recv() --reader task--> FrameMailbox (newest wins) --worker task-->
        InferenceService.detect() --> detection message --> "detections" data channel

One object owns the whole lifetime: it creates the peer connection, starts the two tasks,
and ``close()`` — the single exit for every way a session ends (client close, ICE failure
or disconnect, the track ending, server shutdown) — cancels them, stops the track, closes
the connection and tells the registry to forget it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .codec_preference import prefer_cheap_video_decoder
from .control import Config, ControlError, apply_config, parse_control
from .inference import InferenceService, VideoFrameLike
from .logs import SESSION_ID, session_logger
from .mailbox import FrameMailbox, MailboxClosed
from .messages import FrameCounts, detection_message, encode, error_message
from .metrics import Metrics
from .ratelimit import TokenBucket
from .yolo import Thresholds

__all__ = ["DATA_CHANNEL_LABEL", "OfferError", "PeerSession", "SessionLimits", "apply_config"]

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "detections"
_ENDED_STATES = frozenset({"failed", "closed", "disconnected"})


class OfferError(ValueError):
    """The offer cannot be answered (e.g. it carries no video); a client error."""


@dataclass(frozen=True)
class SessionLimits:
    """How long a session may wait for its peer and its frames, and how chatty it may be."""

    #: Offer answered -> peer connected, in seconds; a peer that never connects is reaped.
    connect_timeout: float = 15.0
    #: Seconds without a video frame before the session is reaped (a silent track).
    idle_timeout: float = 30.0
    #: Control messages per second (burst: twice that); the rest are dropped.
    message_rate: float = 20.0


@dataclass(frozen=True)
class ReceivedFrame:
    frame_id: int
    frame: VideoFrameLike
    pts: int | None
    received_at: float


class PeerSession:
    def __init__(
        self,
        pc: RTCPeerConnection,
        inference: InferenceService,
        thresholds: Thresholds,
        metrics: Metrics,
        on_closed: Callable[[PeerSession], Awaitable[None] | None] | None = None,
        limits: SessionLimits | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.log = session_logger(log, self.id)
        self.limits = limits or SessionLimits()
        self._messages = TokenBucket(self.limits.message_rate, 2 * self.limits.message_rate)
        self._flooding = False
        self._frame_failures = 0
        self.pc = pc
        #: Why the session ended, once it has: "closed by peer", "connect timeout", ...
        self.close_reason: str | None = None
        self.thresholds = thresholds
        self._inference = inference
        self._metrics = metrics
        self._on_closed = on_closed
        self._mailbox: FrameMailbox[ReceivedFrame] = FrameMailbox()
        self._channel: RTCDataChannel | None = None
        self._track: MediaStreamTrack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.Task[None] | None = None
        self.processed = 0
        self.created_at = time.monotonic()
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    # ----- signaling ---------------------------------------------------------------------
    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the client's offer and return our answer (ICE fully gathered: non-trickle).

        aiortc's parser lets some malformed offers through (odd BUNDLE groups, sections
        without transports — found by the fuzz tests) and then fails on them deep inside
        with AttributeError & co. Everything here digests the client's SDP, so such a failure
        is answered as a bad offer (400); the traceback is logged at WARNING so that a real
        server fault would still be seen.
        """
        try:
            prefer_cheap_video_decoder(self.pc)  # before the offer: aiortc negotiates there
            await self.pc.setRemoteDescription(offer)
            if not any(t.kind == "video" and t.mid is not None for t in self.pc.getTransceivers()):
                raise OfferError("the offer has no video track")
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "recvonly"
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (OfferError, ValueError):
            raise
        except Exception as exc:
            self.log.warning("aiortc could not answer the offer: %s: %s", type(exc).__name__, exc, exc_info=True)
            raise OfferError(f"the offer cannot be answered: {type(exc).__name__}: {exc}") from exc
        return self.pc.localDescription

    @property
    def counts(self) -> FrameCounts:
        return FrameCounts(self._mailbox.received, self.processed, self._mailbox.dropped)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def start_watchdog(self) -> None:
        """Reap the session if its peer has not connected within ``connect_timeout``."""
        self._spawn(self._watch_connect(), "watchdog")

    def _spawn(self, coro: Coroutine[Any, Any, None], role: str) -> None:
        """Start one of the session's tasks in a context whose ``SESSION_ID`` is ours, so
        every log line written from it (ours, inference's, aiortc's) carries the id."""
        context = contextvars.copy_context()
        context.run(SESSION_ID.set, self.id)
        task = asyncio.get_running_loop().create_task(coro, name=f"{role}-{self.id[:8]}", context=context)
        self._tasks.append(task)

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self.limits.connect_timeout)
        if self.pc.connectionState != "connected" and not self.closed:
            self.log.warning("peer did not connect within %.1f s (state %s); reaping",
                             self.limits.connect_timeout, self.pc.connectionState)
            self._metrics.count_error("session_connect_timeout")
            self.close_soon("connect timeout")

    # ----- peer connection events ---------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._track is not None:
            return  # audio, or a second video track: not ours to process
        self._track = track
        self._spawn(self._read_frames(track), "reader")
        self._spawn(self._process_frames(), "worker")
        self.log.info("receiving video")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL:
            return
        self._channel = channel
        channel.on("message", self._on_message)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.log.info("connection %s", state)
        if state in _ENDED_STATES:
            self.close_soon(f"connection {state}")

    def _on_message(self, raw: Any) -> None:
        """Control messages (see ``control.py``), at most ``message_rate`` per second.

        A flood is answered with one ``rate_limited`` error and logged once; the messages
        beyond the rate are dropped (and counted). The flood counts as over once the peer
        has been quiet long enough for the whole burst to refill.
        """
        if self._flooding and self._messages.full:
            self._flooding = False  # quiet long enough for the whole burst to refill: flood over
        if self._messages.take() > 0:
            self._metrics.count_error("session_rate_limited")
            if not self._flooding:
                self._flooding = True
                self.log.warning("control messages over %.0f/s: dropping until the peer slows down",
                                 self.limits.message_rate)
                self._send(error_message("rate_limited", f"at most {self.limits.message_rate:g} "
                                         "control messages per second; the rest are dropped"))
            return
        try:
            decision = parse_control(raw, self.thresholds)
        except ControlError as exc:
            self.log.info("bad control message: %s", exc)
            self._metrics.count_error("session_bad_message")
            self._send(error_message("bad_message", str(exc)))
            return
        if isinstance(decision, Config):
            self.thresholds = decision.thresholds
            self._send(decision.ack(self._inference.info.class_names))
        else:
            self._send({"type": "pong", "t": decision.t})

    # ----- the two tasks ------------------------------------------------------------------
    async def _read_frames(self, track: MediaStreamTrack) -> None:
        """Drain the track at decode speed; only the newest frame stays in the mailbox."""
        frame_id = 0
        try:
            while True:
                try:  # asyncio.timeout: no extra Task per frame, unlike wait_for on 3.11
                    async with asyncio.timeout(self.limits.idle_timeout):
                        frame = await track.recv()
                except TimeoutError:
                    self.log.warning("no video frame for %.1f s; reaping", self.limits.idle_timeout)
                    self._metrics.count_error("session_idle_timeout")
                    self.close_soon("no video")
                    return
                if self._mailbox.put(ReceivedFrame(frame_id, frame, frame.pts, time.perf_counter())):
                    self._metrics.frames_dropped.inc()
                self._metrics.frames_received.inc()
                frame_id += 1
        except MediaStreamError:
            self.log.info("video track ended")
            self.close_soon("track ended")

    async def _process_frames(self) -> None:
        try:
            while True:
                item = await self._mailbox.get()
                try:
                    result = await self._inference.detect(item.frame, self.thresholds)
                except Exception as exc:
                    self._frame_failed(item, exc)
                    continue
                self.processed += 1
                done_at = time.perf_counter()
                self._metrics.observe(result, result.started_at - item.received_at, done_at - item.received_at)
                message = detection_message(
                    result,
                    self._inference.info,
                    received_at=item.received_at,
                    done_at=done_at,
                    frame_id=item.frame_id,
                    pts=item.pts,
                    counts=self.counts,
                )
                self._send(message)
        except MailboxClosed:
            pass

    def _frame_failed(self, item: ReceivedFrame, exc: Exception) -> None:
        """A frame the pipeline could not process: skip it, keep the session.

        Logged with its traceback the first time, counted always (``session_frame_failed``)
        and reported to the client, so a stream of bad frames is visible without flooding
        the log.
        """
        self._frame_failures += 1
        self._metrics.count_error("session_frame_failed")
        if self._frame_failures == 1:
            self.log.exception("frame %d (%s) could not be processed; skipping it", item.frame_id,
                               type(exc).__name__)
            self._send(error_message("frame_failed", f"frame {item.frame_id} could not be processed: "
                                     f"{type(exc).__name__}"))

    def _send(self, message: dict[str, Any]) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(encode(message))

    # ----- teardown -----------------------------------------------------------------------
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
        self._mailbox.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        try:
            if self._track is not None:
                self._track.stop()
            await self.pc.close()
        except Exception:
            # aiortc can fail to close a connection left half-built by a malformed offer
            # (found by the fuzz tests); the session must still leave the registry.
            self.log.warning("aiortc failed while closing the peer connection", exc_info=True)
            self._metrics.count_error("session_close_failed")
        counts = self.counts
        self._metrics.sessions_closed.labels((self.close_reason or "closed").replace(" ", "_")).inc()
        self.log.info("closed: %s (%d received, %d processed, %d dropped)",
                      self.close_reason, counts.received, counts.processed, counts.dropped)
        if self._on_closed is not None:
            outcome = self._on_closed(self)
            if outcome is not None:
                await outcome
