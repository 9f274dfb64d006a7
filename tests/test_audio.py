"""Audio never piles up on the server (issue 13).

aiortc decodes every received track into an unbounded queue; audio was decoded and never
read (measured before this fix: +52 MB in 45 s). Now ``/offer`` declines audio (answered
``inactive``: the client stops sending it, aiortc starts no receiver, no decoder) and WHIP
answers it ``recvonly`` as RFC 9725 requires and drains it: decoded frames are read and
dropped, the queue stays empty. The memory figures are bench.experiments.audio_memory's; here the
mechanism is checked, without timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack, ToneTrack
from drivers.whip_client import WhipClient
from rtc_server.signaling.context import REGISTRY
from rtc_server.webrtc.peer import AudioPolicy, PeerSource

from .helpers import ServerFactory, serve, wait_for


def audio_decoders() -> list[threading.Thread]:
    """aiortc names each receiver's decoder thread ``<kind>-decoder``."""
    return [t for t in threading.enumerate() if t.name == "audio-decoder" and t.is_alive()]


def media_section(sdp: str, kind: str) -> str:
    return next(s for s in sdp.split("m=")[1:] if s.startswith(kind))


async def test_offer_declines_audio_so_nothing_is_decoded(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=30), audio=ToneTrack())
    await client.connect()
    try:
        assert "a=inactive" in media_section(client.pc.remoteDescription.sdp, "audio")
        await client.next_message()  # video flows and is detected
        source = app[REGISTRY].get(client.session_id or "").source
        assert isinstance(source, PeerSource) and source.audio is AudioPolicy.DECLINE
        audio = [t for t in source.pc.getTransceivers() if t.kind == "audio"]
        assert [t.currentDirection for t in audio] == ["inactive"]
        assert not audio_decoders(), "no audio receiver, no decoder thread"
        # and the client was told not to send it at all
        sender = next(t.sender for t in client.pc.getTransceivers() if t.kind == "audio")
        stats = await sender.getStats()
        assert not [s for s in stats.values() if s.type == "outbound-rtp" and s.packetsSent > 0]
    finally:
        await client.close()


async def test_whip_receives_audio_and_drains_it(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    client = WhipClient(f"{url}/whip", ImageTrack(bus_frame, fps=30), audio=ToneTrack())
    await client.connect()
    try:
        assert "a=recvonly" in media_section(client.answer or "", "audio")  # RFC 9725 §4.2: recvonly
        source = app[REGISTRY].get(client.session_id or "").source
        assert isinstance(source, PeerSource) and source.audio is AudioPolicy.DRAIN
        await wait_for(lambda: len(source.drained) == 1)
        track = source.drained[0]
        receiver = next(r for r in source.pc.getReceivers() if r.track is track)

        async def packets() -> int:
            stats = await receiver.getStats()
            return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")

        await wait_for(lambda: bool(audio_decoders()))  # the audio is really received and decoded
        first = await packets()
        depths = []
        for _ in range(20):  # 50 Opus frames a second arrive meanwhile
            await asyncio.sleep(0.1)
            depths.append(track._queue.qsize())  # aiortc's decoded-frame queue for this track
        assert await packets() > first + 20, "audio kept arriving"
        assert max(depths) <= 3, depths  # read as fast as it is decoded: it never piles up
    finally:
        await client.close()
    await wait_for(lambda: not audio_decoders())
