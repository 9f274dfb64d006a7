"""Which video codec to ask for when the client offers several: the cheapest to decode.

The server decodes every frame it receives (it must, even the ones newest-wins drops), so
the decoder's CPU per frame is paid at the full camera rate, by every peer, on the cores
the model needs. Measured here (``python -m bench.experiments.marker_release``, 640x480 at 30 fps, aiortc
1.16.0 / PyAV 18.1.0, frames captured from a live loopback session): H.264 (constrained
baseline, what aiortc decodes) costs about 0.2 ms of CPU per frame, VP8 0.33-0.55 ms; from
headless Chromium 156, 0.12 vs 0.22 ms (``python -m bench.experiments.marker_chrome``). Figures in
docs/benchmarks.md. So H.264 goes first and VP8 stays as the fallback: a
client that offers only VP8 still gets VP8.

aiortc negotiates a transceiver's codecs inside ``setRemoteDescription`` (an answerer's
``setCodecPreferences`` after that has no effect), so the preference goes on a video
transceiver created *before* the offer is applied; aiortc then uses it for the offer's
first video section.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

#: Decoders in order of CPU per frame, cheapest first (see the module docstring).
VIDEO_DECODE_ORDER: tuple[str, ...] = ("video/H264", "video/VP8")


def video_preferences(order: tuple[str, ...] = VIDEO_DECODE_ORDER) -> list[RTCRtpCodecCapability]:
    """aiortc's video capabilities, reordered: ``order`` first, everything else (RTX too) after."""
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    codecs = capabilities.codecs

    def rank(codec: RTCRtpCodecCapability) -> int:
        mime = codec.mimeType.lower()
        return next((i for i, m in enumerate(order) if m.lower() == mime), len(order))

    return sorted(codecs, key=rank)  # stable: aiortc's own order within a codec


def prefer_cheap_video_decoder(pc: RTCPeerConnection) -> RTCRtpTransceiver:
    """Add a receive-only video transceiver that asks for the cheapest codec; call before
    ``setRemoteDescription(offer)``. If the offer has no video it stays unused (no mid)."""
    transceiver = pc.addTransceiver("video", direction="recvonly")
    transceiver.setCodecPreferences(video_preferences())
    return transceiver
