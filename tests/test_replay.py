"""The replay driver: pre-encoded H.264 / VP8 through aiortc, answered frame by frame."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient
from drivers.replay import ReplayTrack, encode_clip, panning_frames
from tests.helpers import ServerFactory, serve


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_a_replayed_clip_is_decoded_detected_and_matched_by_pts(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray,
        codec: str) -> None:
    clip = encode_clip(panning_frames(bus_frame, count=15), codec)
    assert len(clip.packets) == 15 and (clip.width, clip.height) == (640, 480)
    url = await serve(aiohttp_server, make_app())
    track = ReplayTrack(clip, fps=30)
    async with DetectionClient(url, track, codecs=(clip.mime,)) as client:
        messages = [await client.next_message() for _ in range(20)]  # past the first loop of the clip
    for m in messages:
        assert (m["width"], m["height"]) == (640, 480)
        assert {"bus", "person"} <= {d["label"] for d in m["detections"]}, m["detections"]
        assert m["pts"] in track.sent_at  # the pts sent, exactly: latency is frame-matched
        latency = client.latency_ms(m)
        assert latency is not None and latency > 0
    assert max(m["pts"] for m in messages) >= 15 * 2997  # the clip looped and still decoded
