"""Real SDP offers made by aiortc (no candidates gathered: nothing is sent anywhere)."""

from __future__ import annotations

import re

from aiortc import RTCPeerConnection

from rtc_server.webrtc.ice import rtc_configuration


async def make_offer(video: int = 1, audio: int = 0, channel: bool = True) -> str:
    """An offer with ``video`` recvonly/sendrecv video sections and ``audio`` audio ones."""
    pc = RTCPeerConnection(rtc_configuration(()))
    try:
        if channel:
            pc.createDataChannel("detections")
        for _ in range(video):
            pc.addTransceiver("video", direction="sendonly")
        for _ in range(audio):
            pc.addTransceiver("audio", direction="sendonly")
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


def only_unsupported_video_codecs(sdp: str) -> str:
    """The same offer with every video codec renamed to one aiortc cannot decode (AV1/H265)."""
    sdp = re.sub(r"a=rtpmap:(\d+) VP8/90000", r"a=rtpmap:\1 AV1/90000", sdp)
    return re.sub(r"a=rtpmap:(\d+) H264/90000", r"a=rtpmap:\1 H265/90000", sdp)
