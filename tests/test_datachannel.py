"""The ``detections`` data channel is a sink that skips rather than queues (issue 13).

A real congested channel: the client's SCTP stops acknowledging (its DATA chunks are
swallowed before SCTP sees them, so no SACK goes back). The server's SCTP then has its
congestion window full and aiortc queues every further message in its own unbounded
queue (``bufferedAmount``) — unless the sink stops sending: it must skip and count, and
what waits unsent must stay bounded. No timing is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web
from aiortc.rtcsctptransport import DataChunk, ForwardTsnChunk

from drivers.client import DetectionClient, ImageTrack
from rtc_server.signaling.context import REGISTRY
from rtc_server.webrtc.peer import MAX_BUFFERED_BYTES, PeerSource

from .helpers import ServerFactory, scrape, serve, wait_for


def stop_acknowledging(client: DetectionClient) -> None:
    """Make the client's SCTP ignore incoming DATA (and FORWARD-TSN): it never SACKs again."""
    sctp: Any = client.pc.sctp
    receive = sctp._receive_chunk

    async def deaf(chunk: Any) -> None:
        if not isinstance(chunk, DataChunk | ForwardTsnChunk):
            await receive(chunk)

    sctp._receive_chunk = deaf


async def test_congested_channel_skips_messages_and_stays_bounded(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=30))
    await client.connect()
    try:
        await client.next_message()
        source = app[REGISTRY].get(client.session_id or "").source
        assert isinstance(source, PeerSource) and source.sink is not None
        channel = source.sink.channel
        # what the client asked for (drivers/client.py and static/app.js open it so)
        assert channel.ordered is False and channel.maxRetransmits == 0
        assert source.sink.skipped == 0

        stop_acknowledging(client)
        buffered: list[int] = []

        async def sample() -> None:
            while True:
                buffered.append(channel.bufferedAmount)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            await wait_for(lambda: source.sink.skipped >= 10, timeout=60)
        finally:
            sampler.cancel()
        largest_message = 16 * 1024  # a detection message is 1-3 KB; generous
        assert max(buffered) <= MAX_BUFFERED_BYTES + largest_message, max(buffered)
        metrics = await scrape(url)
        assert metrics['rtc_sink_messages_skipped_total{sink="datachannel"}'] >= 10
    finally:
        await client.close()

