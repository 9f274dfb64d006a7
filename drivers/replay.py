"""Replay pre-encoded video through aiortc: a sender that costs almost nothing per frame.

An aiortc client that sends raw frames encodes each one (libvpx / libx264 called from its
sender, 5–10 ms of CPU per 640x480 frame). Benchmarks that put N such peers on the same
cores as the server measure mostly their own encoders. aiortc also accepts frames that
are already encoded: when a track's ``recv()`` returns an ``av.Packet`` instead of an
``av.VideoFrame`` (as ``MediaPlayer(..., decode=False)`` does), ``RTCRtpSender`` only
packetizes it (``encoder.pack``) — no encoder runs. So:

    clip = encode_clip(frames, "h264")          # once: a looping clip, keyframe first
    track = ReplayTrack(clip, fps=30)           # per peer: packets, paced, pts recorded
    client = DetectionClient(url, track, codecs=(clip.mime,))

The clip loops; it starts with a keyframe and has no other, so each loop begins on one
(one keyframe per ``len(frames) / fps`` seconds) and a decoder that lost a packet recovers
there — a replayed stream cannot answer a keyframe request (PLI), there is no encoder.
``sent_at`` maps each pts to the moment the packet was handed to the sender, exactly as
``ImageTrack`` does, so ``DetectionClient.latency_ms`` matches replies frame by frame.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

from .client import VIDEO_CLOCK, SentTrack

#: codec name -> (PyAV encoder, the MIME type to negotiate).
CODECS = {"h264": ("libx264", "video/H264"), "vp8": ("libvpx", "video/VP8")}


@dataclass(frozen=True)
class EncodedClip:
    """One encoded access unit per frame, the first a keyframe and the only one."""

    codec: str
    mime: str
    width: int
    height: int
    packets: tuple[bytes, ...]

    @property
    def bytes_per_frame(self) -> float:
        return sum(map(len, self.packets)) / len(self.packets)


def encode_clip(frames: Sequence[np.ndarray], codec: str = "h264", fps: float = 30.0,
                bitrate: int = 1_000_000) -> EncodedClip:
    """Encode RGB ``frames`` once, as aiortc's own encoders would for a live camera
    (H.264 constrained baseline level 3.1, or VP8 realtime), one packet per frame."""
    encoder, mime = CODECS[codec]
    height, width = frames[0].shape[:2]
    context = av.CodecContext.create(encoder, "w")
    context.width, context.height = width, height
    context.pix_fmt = "yuv420p"
    context.time_base = fractions.Fraction(1, round(fps))
    context.framerate = fractions.Fraction(round(fps), 1)
    context.bit_rate = bitrate
    context.gop_size = len(frames)
    if codec == "h264":
        context.profile = "Baseline"
        # One keyframe (with its SPS/PPS in band) at the start of the clip and no other.
        context.options = {"level": "31", "tune": "zerolatency", "preset": "veryfast",
                           "x264-params": f"keyint={len(frames)}:min-keyint={len(frames)}:scenecut=0"}
    else:
        # A quality ceiling (qmax) rather than strict CBR: after a large keyframe, CBR starves
        # the next frames (PSNR ~23 dB, the bus no longer detected).
        context.qmin, context.qmax = 4, 36
        context.options = {"deadline": "good", "cpu-used": "4", "lag-in-frames": "0",
                           "kf-max-dist": str(len(frames))}
    packets: list[bytes] = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.pict_type = av.video.frame.PictureType.I if i == 0 else av.video.frame.PictureType.NONE
        packets.append(b"".join(bytes(p) for p in context.encode(frame)))
    tail = b"".join(bytes(p) for p in context.encode(None))
    if tail:  # zero-latency settings flush nothing; keep the data anyway
        packets[-1] += tail
    if not all(packets):
        raise RuntimeError(f"the {codec} encoder did not give one packet per frame")
    return EncodedClip(codec, mime, width, height, tuple(packets))


def panning_frames(image: np.ndarray, count: int = 30, step: int = 4) -> list[np.ndarray]:
    """``count`` copies of ``image`` shifted ``step`` pixels more each: camera-like motion,
    so the clip's inter frames carry real data rather than "nothing changed"."""
    return [np.ascontiguousarray(np.roll(image, i * step, axis=1)) for i in range(count)]


class ReplayTrack(SentTrack):
    """A video track that sends ``clip``'s packets in a loop at ``fps``, never encoding."""

    def __init__(self, clip: EncodedClip, fps: float = 30.0) -> None:
        super().__init__(fps)
        self.clip = clip
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)

    async def recv(self) -> av.Packet:  # type: ignore[override]  # aiortc accepts packets too
        index, pts = await self._next_frame()
        packet = av.Packet(self.clip.packets[index % len(self.clip.packets)])
        packet.pts = packet.dts = pts
        packet.time_base = self._time_base
        self._sent(pts)
        return packet
