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
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack

from rtc_server.webrtc.ice import rtc_configuration

VIDEO_CLOCK = 90_000


def pts_step(fps: float) -> int:
    """Frame interval in 90 kHz ticks, rounded to a multiple of 9 (see module doc)."""
    return max(9, round(VIDEO_CLOCK / fps / 9) * 9)


class SentTrack(MediaStreamTrack):
    """A video track paced at ``fps`` that remembers when it handed each frame (by pts) to
    the sender; subclasses say what a frame is (``ImageTrack``: a raw frame to encode,
    ``drivers.replay.ReplayTrack``: an already-encoded packet)."""

    kind = "video"

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__()
        self._step = pts_step(fps)
        self._interval = self._step / VIDEO_CLOCK
        self._count = 0
        self._start: float | None = None
        #: pts -> ``perf_counter`` moment the frame was handed to the sender.
        self.sent_at: dict[int, float] = {}

    async def _next_frame(self) -> tuple[int, int]:
        """Wait for the next frame's moment; its index and pts (raises when stopped)."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        delay = self._start + self._count * self._interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        index, pts = self._count, self._count * self._step
        self._count += 1
        return index, pts

    def _sent(self, pts: int) -> None:
        self.sent_at[pts] = time.perf_counter()


class ImageTrack(SentTrack):
    """A live video track that sends ``frames`` (RGB arrays) in a loop at ``fps``, encoded
    by aiortc's sender. Pass several frames (e.g. shifted copies) to give the encoder real
    motion."""

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], fps: float = 30.0) -> None:
        super().__init__(fps)
        self._frames = [frames] if isinstance(frames, np.ndarray) else list(frames)

    async def recv(self) -> av.VideoFrame:
        index, pts = await self._next_frame()
        frame = av.VideoFrame.from_ndarray(self._frames[index % len(self._frames)], format="rgb24")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._sent(pts)
        return frame


class ToneTrack(MediaStreamTrack):
    """A live 48 kHz stereo audio track playing a tone: real Opus payloads (silence would
    encode to almost nothing), for tests and benches of what the server does with audio."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, sample_rate: int = 48_000) -> None:
        super().__init__()
        self._rate = sample_rate
        self._samples = int(AUDIO_PTIME * sample_rate)
        self._frequency = frequency
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        delay = self._start + self._count * AUDIO_PTIME - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(self._samples) + self._count * self._samples) / self._rate
        mono = (np.sin(2 * np.pi * self._frequency * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2)[None, :], format="s16", layout="stereo")
        frame.sample_rate = self._rate
        frame.pts = self._count * self._samples
        frame.time_base = fractions.Fraction(1, self._rate)
        self._count += 1
        return frame


class DetectionClient:
    """One peer connection to the server: offer via ``POST /offer``, detections back."""

    def __init__(self, base_url: str, track: SentTrack, ice_servers: Sequence[dict[str, Any]] = (),
                 token: str | None = None, codecs: Sequence[str] = (), model: str | None = None,
                 max_fps: float | None = None, audio: MediaStreamTrack | None = None,
                 offer_fields: dict[str, Any] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        #: More fields for the offer's JSON (``tracking``, ``zones``, ``lines``: issue 21).
        self.offer_fields = dict(offer_fields or {})
        #: The model the session starts with (``"model"`` in the offer); None: the server's default.
        self.model = model
        #: Sent in the offer: at most this many detections per second for this session.
        self.max_fps = max_fps
        #: Sent as ``Authorization: Bearer <token>`` when the server sets ``RTC_AUTH_TOKEN``.
        self.token = token
        self.track = track
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        # as the page opens it: a late detection is worth nothing, so no retransmissions and no
        # head-of-line blocking behind a lost one
        self.channel = self.pc.createDataChannel("detections", ordered=False, maxRetransmits=0)
        if audio is not None:
            self.pc.addTrack(audio)
        self.session_id: str | None = None
        #: The session token of the answer: ``?token=`` for the session's events/ws/snapshot.
        self.session_token: str | None = None
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
                  **({"max_fps": self.max_fps} if self.max_fps else {}), **self.offer_fields},
            headers={"Authorization": f"Bearer {self.token}"} if self.token else None,
        ) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"/offer answered {response.status}: {body}")
        self.session_id = body["session_id"]
        self.session_token = body.get("token")
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
