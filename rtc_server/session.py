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
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .codec_preference import prefer_cheap_video_decoder
from .inference import InferenceService, VideoFrameLike
from .mailbox import FrameMailbox, MailboxClosed
from .messages import FrameCounts, detection_message, encode, error_message
from .metrics import Metrics
from .yolo import Thresholds

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "detections"
_ENDED_STATES = frozenset({"failed", "closed", "disconnected"})


class OfferError(ValueError):
    """The offer cannot be answered (e.g. it carries no video); a client error."""


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
    ) -> None:
        self.id = uuid.uuid4().hex
        self.pc = pc
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
        """Apply the client's offer and return our answer (ICE fully gathered: non-trickle)."""
        prefer_cheap_video_decoder(self.pc)  # before the offer: aiortc negotiates there
        await self.pc.setRemoteDescription(offer)
        if not any(t.kind == "video" and t.mid is not None for t in self.pc.getTransceivers()):
            raise OfferError("the offer has no video track")
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.direction = "recvonly"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    @property
    def counts(self) -> FrameCounts:
        return FrameCounts(self._mailbox.received, self.processed, self._mailbox.dropped)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    # ----- peer connection events ---------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._track is not None:
            return  # audio, or a second video track: not ours to process
        self._track = track
        self._tasks.append(asyncio.create_task(self._read_frames(track), name=f"reader-{self.id[:8]}"))
        self._tasks.append(asyncio.create_task(self._process_frames(), name=f"worker-{self.id[:8]}"))
        log.info("session %s: receiving video", self.id[:8])

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL:
            return
        self._channel = channel
        channel.on("message", self._on_message)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: connection %s", self.id[:8], state)
        if state in _ENDED_STATES:
            self.close_soon()

    def _on_message(self, raw: Any) -> None:
        """Control messages from the client: ``{"type": "config", "conf": .., "iou": .., "classes": [..]}``
        (acknowledged with the thresholds now in force and ``class_names``) and ``ping``."""
        try:
            message = json.loads(raw) if isinstance(raw, str) else None
            if not isinstance(message, dict):
                raise ValueError("a control message must be a JSON object")
            if message.get("type") == "ping":
                self._send({"type": "pong", "t": message.get("t")})
                return
            if message.get("type") != "config":
                raise ValueError(f"unknown message type {message.get('type')!r}")
            self.thresholds = apply_config(self.thresholds, message)
            # The ack carries the model's class names so a client (the page's class filter)
            # can offer them; a bare {"type": "config"} is therefore a query.
            self._send({"type": "config", "conf": self.thresholds.conf, "iou": self.thresholds.iou,
                        "classes": sorted(self.thresholds.classes) if self.thresholds.classes else None,
                        "class_names": list(self._inference.info.class_names)})
        except ValueError as exc:
            log.info("session %s: bad control message: %s", self.id[:8], exc)
            self._send(error_message("bad_message", str(exc)))

    # ----- the two tasks ------------------------------------------------------------------
    async def _read_frames(self, track: MediaStreamTrack) -> None:
        """Drain the track at decode speed; only the newest frame stays in the mailbox."""
        frame_id = 0
        try:
            while True:
                frame = await track.recv()
                if self._mailbox.put(ReceivedFrame(frame_id, frame, frame.pts, time.perf_counter())):
                    self._metrics.frames_dropped.inc()
                self._metrics.frames_received.inc()
                frame_id += 1
        except MediaStreamError:
            log.info("session %s: video track ended", self.id[:8])
            self.close_soon()

    async def _process_frames(self) -> None:
        try:
            while True:
                item = await self._mailbox.get()
                result = await self._inference.detect(item.frame, self.thresholds)
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

    def _send(self, message: dict[str, Any]) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(encode(message))

    # ----- teardown -----------------------------------------------------------------------
    def close_soon(self) -> None:
        """Start closing from a synchronous callback; idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())

    async def close(self) -> None:
        self.close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._mailbox.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        if self._track is not None:
            self._track.stop()
        await self.pc.close()
        counts = self.counts
        log.info("session %s: closed (%d received, %d processed, %d dropped)",
                 self.id[:8], counts.received, counts.processed, counts.dropped)
        if self._on_closed is not None:
            outcome = self._on_closed(self)
            if outcome is not None:
                await outcome


def apply_config(current: Thresholds, message: dict[str, Any]) -> Thresholds:
    """Validate a ``config`` control message and return the new thresholds (ValueError if bad)."""
    allowed = {"type", "conf", "iou", "classes"}
    extra = set(message) - allowed
    if extra:
        raise ValueError(f"unknown fields {sorted(extra)}")
    updates: dict[str, Any] = {}
    for name in ("conf", "iou"):
        if name in message:
            value = message[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1]")
            updates[name] = float(value)
    if "classes" in message:
        classes = message["classes"]
        if classes is None:
            updates["classes"] = None
        elif isinstance(classes, list) and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 1000
                                               for c in classes):
            updates["classes"] = frozenset(classes)
        else:
            raise ValueError("classes must be null or a list of class ids")
    return replace(current, **updates)
