"""Experiment helper (issue 6): stage clocks for the receive path, where a frame's time goes.

Instrumentation only, for ``bench.experiments.marker_release``. Client and server run in one
process, so every ``perf_counter`` stamp is on the same clock. Stamps come from thin
wrappers put on the names aiortc's receiver looks up at call time (never from edited
library files):

* ``aiortc.rtcrtpreceiver.JitterBuffer`` (whichever class is installed: stock or marker)
  -> arrival of a frame's first packet and of its marker packet, and its release;
* ``aiortc.rtcrtpreceiver.get_decoder`` -> decode start/end in the decoder thread, that
  thread's CPU time, and a copy of each encoded frame (for the codec CPU comparison);
* ``RemoteStreamTrack.recv`` -> the moment the decoded frame reaches the event loop.

Frames are matched by pts: the receiver maps RTP timestamps to pts relative to the first
released frame, exactly as the sending ``ImageTrack`` numbers them (see drivers/client.py).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiortc
import aiortc.rtcrtpreceiver as receiver_module
import cv2
import numpy as np
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from bench.common import FIXTURE
from rtc_server.engine.detector import DetectionResult, ModelInfo

_ORIGINAL_GET_DECODER = receiver_module.get_decoder
_ORIGINAL_RECV = receiver_module.RemoteStreamTrack.recv


@dataclass
class FrameStamps:
    first_packet: float | None = None
    marker_packet: float | None = None
    released: float | None = None
    decode_start: float | None = None
    decode_end: float | None = None
    decode_cpu: float | None = None
    recv: float | None = None


@dataclass
class StageClock:
    """Per-frame stamps of one session, keyed by pts (90 kHz, relative to the first frame)."""

    frames: dict[int, FrameStamps] = field(default_factory=dict)
    encoded: list[tuple[str, bytes, int]] = field(default_factory=list)
    keep_encoded: int = 0
    #: (width, height) of the latest decoded frame.
    size: tuple[int, int] | None = None
    _rtp_origin: int | None = None
    _by_rtp: dict[int, FrameStamps] = field(default_factory=dict)

    def _stamps_rtp(self, timestamp: int) -> FrameStamps:
        return self._by_rtp.setdefault(timestamp, FrameStamps())

    def _pts(self, rtp_timestamp: int) -> int:
        assert self._rtp_origin is not None
        return (rtp_timestamp - self._rtp_origin) % (1 << 32)

    # ----- hooks ---------------------------------------------------------------------------
    def on_packet(self, packet: RtpPacket, now: float) -> None:
        stamps = self._stamps_rtp(packet.timestamp)
        if stamps.first_packet is None:
            stamps.first_packet = now
        if packet.marker:
            stamps.marker_packet = now

    def on_release(self, frame: JitterFrame, now: float) -> None:
        if self._rtp_origin is None:
            self._rtp_origin = frame.timestamp  # what aiortc's TimestampMapper does
        stamps = self._by_rtp.pop(frame.timestamp, FrameStamps())
        stamps.released = now
        self.frames[self._pts(frame.timestamp)] = stamps

    def on_decode(self, codec: str, frame: JitterFrame, start: float, end: float, cpu: float) -> None:
        stamps = self.frames.setdefault(frame.timestamp, FrameStamps())
        stamps.decode_start, stamps.decode_end, stamps.decode_cpu = start, end, cpu
        if len(self.encoded) < self.keep_encoded:
            self.encoded.append((codec, bytes(frame.data), frame.timestamp))

    def on_recv(self, pts: int, now: float) -> None:
        self.frames.setdefault(pts, FrameStamps()).recv = now


_active: StageClock | None = None


def install(clock: StageClock) -> None:
    """Stamp into ``clock`` from now on; wraps the installed jitter buffer class (call after
    ``use_marker_release``) and, once, the decoder factory and the track's ``recv``."""
    global _active
    _active = clock
    base = receiver_module.JitterBuffer
    if getattr(base, "_timed_base", None) is not None:
        base = base._timed_base

    class Timed(base):  # type: ignore[misc, valid-type]
        _timed_base = base

        def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
            now = time.perf_counter()
            video = self._is_video and _active is not None
            if video:
                _active.on_packet(packet, now)
            pli, frame = super().add(packet)
            if video and frame is not None:
                _active.on_release(frame, time.perf_counter())
            return pli, frame

    Timed.__name__ = f"Timed{base.__name__}"
    receiver_module.JitterBuffer = Timed
    receiver_module.get_decoder = _timed_get_decoder
    receiver_module.RemoteStreamTrack.recv = _timed_recv  # type: ignore[method-assign]


def uninstall() -> None:
    global _active
    _active = None
    base = receiver_module.JitterBuffer
    receiver_module.JitterBuffer = getattr(base, "_timed_base", base)
    receiver_module.get_decoder = _ORIGINAL_GET_DECODER
    receiver_module.RemoteStreamTrack.recv = _ORIGINAL_RECV  # type: ignore[method-assign]


class _TimedDecoder:
    def __init__(self, inner: Any, codec: str) -> None:
        self._inner, self._codec = inner, codec

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        cpu0, t0 = time.thread_time(), time.perf_counter()
        frames = self._inner.decode(encoded_frame)
        t1, cpu1 = time.perf_counter(), time.thread_time()
        if _active is not None and getattr(encoded_frame, "timestamp", None) is not None:
            _active.on_decode(self._codec, encoded_frame, t0, t1, cpu1 - cpu0)
        return frames


def _timed_get_decoder(codec: Any) -> _TimedDecoder:
    return _TimedDecoder(_ORIGINAL_GET_DECODER(codec), codec.name)


async def _timed_recv(self: Any) -> Any:
    frame = await _ORIGINAL_RECV(self)
    if _active is not None and self.kind == "video" and frame.pts is not None:
        _active.on_recv(frame.pts, time.perf_counter())
        _active.size = (frame.width, frame.height)
    return frame


# ----- statistics ---------------------------------------------------------------------------
def percentile(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    k = (len(data) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def p50(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


STAGES: list[tuple[str, str]] = [
    ("send->first packet", "client encode + packetize + loopback"),
    ("first->marker packet", "the frame's own packets"),
    ("marker->released", "jitter-buffer wait (the interval this issue removes)"),
    ("released->decode start", "hand-off to the decoder thread"),
    ("decode", "VP8/H.264 decode (decoder thread)"),
    ("decoded->recv", "decoder thread -> event loop hop"),
    ("recv->inference start", "mailbox + hop to the inference thread"),
    ("preprocess", "YUV->RGB, letterbox, blob"),
    ("inference", "onnxruntime session.run"),
    ("postprocess", "decode boxes + NMS"),
    ("done->sent", "hop back to the loop + JSON"),
    ("sent->client", "data channel (SCTP/DTLS) to the client"),
]


def stage_times(message: dict[str, Any], sent_at: float, client_at: float,
                stamps: FrameStamps) -> dict[str, float] | None:
    """Milliseconds per stage for one answered frame, or None if a stamp is missing."""
    s = stamps
    if None in (s.first_packet, s.marker_packet, s.released, s.decode_start, s.decode_end, s.recv):
        return None
    t = message["timing"]
    ms: Callable[[float, float], float] = lambda a, b: (b - a) * 1000  # noqa: E731
    assert s.first_packet and s.marker_packet and s.released and s.decode_start and s.decode_end and s.recv
    done = s.recv + t["server_ms"] / 1000
    work = t["queue_ms"] + t["preprocess_ms"] + t["inference_ms"] + t["postprocess_ms"]
    return {
        "send->first packet": ms(sent_at, s.first_packet),
        "first->marker packet": ms(s.first_packet, s.marker_packet),
        "marker->released": ms(s.marker_packet, s.released),
        "released->decode start": ms(s.released, s.decode_start),
        "decode": ms(s.decode_start, s.decode_end),
        "decoded->recv": ms(s.decode_end, s.recv),
        "recv->inference start": t["queue_ms"],
        "preprocess": t["preprocess_ms"],
        "inference": t["inference_ms"],
        "postprocess": t["postprocess_ms"],
        "done->sent": t["server_ms"] - work,
        "sent->client": ms(done, client_at),
        "e2e": ms(sent_at, client_at),
    }


# ----- shared by the benches ---------------------------------------------------------------
def camera_frames(count: int) -> list[np.ndarray]:
    """bus.jpg letterboxed into 640x480, panned a little each frame (real motion to encode)."""
    rgb = cv2.cvtColor(cv2.imread(str(FIXTURE)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    resized = cv2.resize(rgb, (round(w * 480 / h), 480))
    frame = np.zeros((480, 640, 3), np.uint8)
    x = (640 - resized.shape[1]) // 2
    frame[:, x: x + resized.shape[1]] = resized
    return [np.roll(frame, 2 * (i if i < count // 2 else count - i), axis=1) for i in range(count)]


class NoopDetector:
    """Answers at once with no boxes: what is left of e2e is the transport + receive path."""

    info = ModelInfo(name="noop", version="0", sha256="0" * 64, class_names=())

    def detect(self, images: Any, thresholds: Any) -> list[DetectionResult]:
        now = time.perf_counter()
        return [DetectionResult(model=self.info, width=i.shape[1], height=i.shape[0], input_hw=i.shape[:2],
                                detections=[],
                                started_at=now, preprocess_ms=0.0, inference_ms=0.0, postprocess_ms=0.0)
                for i in images]

    def warmup(self) -> None:
        pass


def decode_cost(encoded: list[tuple[str, bytes, int]], passes: int = 5) -> dict[str, float]:
    """Process CPU (all threads, FFmpeg's included) and wall time per frame, decode alone and
    decode + the YUV->RGB conversion preprocessing does, on frames captured from the run."""
    codec_name = encoded[0][0]
    params = aiortc.RTCRtpCodecParameters(mimeType=f"video/{codec_name}", clockRate=90000, payloadType=96)
    out: dict[str, float] = {}
    for label, convert in (("decode", False), ("decode_rgb", True)):
        cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        count = 0
        for _ in range(passes):
            decoder = get_decoder(params)
            for _, data, ts in encoded:
                for frame in decoder.decode(JitterFrame(data, ts)):
                    count += 1
                    if convert:
                        frame.to_ndarray(format="rgb24")
        cpu1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        out[f"{label}_cpu_ms"] = cpu * 1000 / max(count, 1)
        out[f"{label}_wall_ms"] = (t1 - t0) * 1000 / max(count, 1)
    out["frames"] = len(encoded)
    out["mean_frame_bytes"] = sum(len(d) for _, d, _ in encoded) / len(encoded)
    return out


