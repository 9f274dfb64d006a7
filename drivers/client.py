"""A browser-less client: stream frames to the server over WebRTC and read detections.

Used by the integration tests and the benchmarks, and usable from any program::

    track = ImageTrack(rgb_image, fps=30)
    async with DetectionClient("http://127.0.0.1:8080", track) as client:
        message = await client.next_message()
        latency_ms = client.latency_ms(message)

Each sent frame's pts is recorded with the moment it was handed to the sender, so a reply
is matched to its own frame by pts, not estimated from averages. pts advance in steps that
are multiples of 9 ticks (90 kHz clock): aiortc's encoder truncates pts to microseconds,
and only multiples of 9 ticks survive that round trip exactly.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack

from rtc_server.webrtc.ice import rtc_configuration

VIDEO_CLOCK = 90_000


def pts_step(fps: float) -> int:
    """Frame interval in 90 kHz ticks, rounded to a multiple of 9 (see module doc)."""
    return max(9, round(VIDEO_CLOCK / fps / 9) * 9)


class SentTrack(MediaStreamTrack):
    """A video track that remembers when it handed each frame (by pts) to the sender."""

    kind = "video"
    #: pts -> ``perf_counter`` moment the frame was handed to the sender.
    sent_at: dict[int, float]


class ImageTrack(VideoStreamTrack, SentTrack):
    """A live video track that sends ``frames`` (RGB arrays) in a loop at ``fps``.

    ``sent_at`` maps each frame's pts to the ``perf_counter`` moment it was handed to the
    sender. Pass several frames (e.g. shifted copies) to give the encoder real motion.
    """

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], fps: float = 30.0) -> None:
        super().__init__()
        self._frames = [frames] if isinstance(frames, np.ndarray) else list(frames)
        self._step = pts_step(fps)
        self._interval = self._step / VIDEO_CLOCK
        self._count = 0
        self._start: float | None = None
        self.sent_at: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        due = self._start + self._count * self._interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self._frames[self._count % len(self._frames)], format="rgb24")
        frame.pts = self._count * self._step
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        self.sent_at[frame.pts] = time.perf_counter()
        return frame


class DetectionClient:
    """One peer connection to the server: offer via ``POST /offer``, detections back."""

    def __init__(self, base_url: str, track: SentTrack, ice_servers: Sequence[dict[str, Any]] = (),
                 token: str | None = None, codecs: Sequence[str] = (), model: str | None = None,
                 max_fps: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        #: The model the session starts with (``"model"`` in the offer); None: the server's default.
        self.model = model
        #: Sent in the offer: at most this many detections per second for this session.
        self.max_fps = max_fps
        #: Sent as ``Authorization: Bearer <token>`` when the server sets ``RTC_AUTH_TOKEN``.
        self.token = token
        self.track = track
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.channel = self.pc.createDataChannel("detections")
        self.session_id: str | None = None
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: ``perf_counter`` arrival time of each detection message, by the frame pts it answers.
        self.received_at: dict[int, float] = {}
        self._opened = asyncio.Event()
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._on_message)
        sender = self.pc.addTrack(track)
        if codecs:  # offer only these, e.g. ("video/VP8",); RTX rides along
            wanted = {c.lower() for c in (*codecs, "video/rtx")}
            transceiver = next(t for t in self.pc.getTransceivers() if t.sender is sender)
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in wanted]
            )

    def _on_message(self, raw: str | bytes) -> None:
        message = json.loads(raw)
        if message.get("type") == "detections" and message.get("pts") is not None:
            self.received_at[message["pts"]] = time.perf_counter()
        self.messages.put_nowait(message)

    async def connect(self, timeout: float = 20.0) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        async with aiohttp.ClientSession() as http, http.post(
            f"{self.base_url}/offer",
            json={"sdp": offer.sdp, "type": offer.type, **({"model": self.model} if self.model else {}),
                  **({"max_fps": self.max_fps} if self.max_fps else {})},
            headers={"Authorization": f"Bearer {self.token}"} if self.token else None,
        ) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"/offer answered {response.status}: {body}")
        self.session_id = body["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await asyncio.wait_for(self._opened.wait(), timeout)

    async def next_message(self, kind: str = "detections", timeout: float = 20.0) -> dict[str, Any]:
        """The next message of type ``kind`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = await asyncio.wait_for(self.messages.get(), max(0.0, deadline - time.monotonic()))
            if message.get("type") == kind:
                return message

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def latency_ms(self, message: dict[str, Any]) -> float | None:
        """Frame handed to the sender -> its detections received, for a detection message.

        The server sees pts relative to the stream's first RTP timestamp, which is 0 here,
        so its pts equal ours.
        """
        pts = message.get("pts")
        if pts is None or pts not in self.track.sent_at or pts not in self.received_at:
            return None
        return (self.received_at[pts] - self.track.sent_at[pts]) * 1000

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()

    async def __aenter__(self) -> DetectionClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
