"""The answer asks for the cheapest video decoder the client offers (H.264, then VP8)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCRtpSender

from drivers.client import DetectionClient, ImageTrack
from rtc_server.webrtc.codec_preference import VIDEO_DECODE_ORDER, video_preferences
from rtc_server.webrtc.ice import rtc_configuration

from .helpers import ServerFactory, serve


def answered_video_codecs(sdp: str) -> list[str]:
    """Codec names of the answer's video section, in the answer's order of preference."""
    lines = sdp.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("m=video"))
    section = lines[start + 1:]
    end = next((i for i, ln in enumerate(section) if ln.startswith("m=")), len(section))
    return [ln.split()[1].split("/")[0] for ln in section[:end] if ln.startswith("a=rtpmap:")]


def test_preferences_keep_every_codec_and_put_the_cheapest_first() -> None:
    prefs = video_preferences()
    assert prefs[0].mimeType == VIDEO_DECODE_ORDER[0]
    all_codecs = RTCRtpSender.getCapabilities("video").codecs
    assert sorted(map(repr, prefs)) == sorted(map(repr, all_codecs))


@pytest.mark.parametrize(("offered", "expected"), [(None, "H264"), ("video/VP8", "VP8"), ("video/H264", "H264")])
async def test_answer_picks_h264_when_offered_and_video_flows(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray,
    offered: str | None, expected: str,
) -> None:
    url = await serve(aiohttp_server, make_app())
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15))
    if offered is not None:  # a client that supports only this codec
        caps = RTCRtpSender.getCapabilities("video").codecs
        for transceiver in client.pc.getTransceivers():
            transceiver.setCodecPreferences([c for c in caps if c.mimeType in (offered, "video/rtx")])
    await client.connect()
    try:
        offer_codecs = answered_video_codecs(client.pc.localDescription.sdp)
        assert "VP8" in offer_codecs if offered is None else set(offer_codecs) <= {expected, "rtx"}
        assert answered_video_codecs(client.pc.remoteDescription.sdp)[0] == expected
        message = await client.next_message()
        assert {"bus", "person"} <= {d["label"] for d in message["detections"]}
    finally:
        await client.close()


async def test_offer_without_video_is_still_refused(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """The pre-made video transceiver must not make a data-only offer look like video."""
    import aiohttp
    from aiortc import RTCPeerConnection

    from rtc_server.signaling.context import REGISTRY

    app = stub_app()
    url = await serve(aiohttp_server, app)
    pc = RTCPeerConnection(rtc_configuration(()))
    pc.createDataChannel("detections")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
            f"{url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}
        ) as response:
            body = await response.json()
        assert response.status == 400 and body["error"] == "bad_offer", body
        assert "no video" in body["detail"]
        assert len(app[REGISTRY]) == 0
    finally:
        await pc.close()
