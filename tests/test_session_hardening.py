"""Bad input on the data channel and the media path, with real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
import fractions
import socket
import threading
import time
from collections.abc import Callable, Sequence

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiortc.mediastreams import VideoStreamTrack

from drivers.client import DetectionClient, ImageTrack
from rtc_server.engine.detector import DetectionResult, Detector
from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import REGISTRY

from .helpers import ServerFactory, scrape, serve, wait_for
from .sdp import make_offer
from .stub_detector import StubDetector, boxes


async def test_bad_control_messages_get_errors_and_the_session_goes_on(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    url = await serve(aiohttp_server, stub_app())
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client:
        await client.next_message()
        for raw, expected in [
            ("not json", "not JSON"),
            ("[1, 2]", "JSON object"),
            ('{"type": "launch"}', "unknown message type"),
            ('{"type": "config", "conf": 1.5}', "conf must be"),
            ('{"type": "config", "iou": -0.1}', "iou must be"),
            ('{"type": "config", "conf": NaN}', "conf must be"),
            ('{"type": "config", "classes": [1, "two"]}', "classes must be"),
            ('{"type": "config", "classes": [5], "admin": true}', "unknown fields"),
            ('{"type": "ping", "t": {"x": 1}}', "ping"),
        ]:
            client.channel.send(raw)
            error = await client.next_message("error")
            assert error["error"] == "bad_message" and expected in error["detail"], (raw, error)
        client.channel.send(b"\x00\x01binary")
        assert "binary" in (await client.next_message("error"))["detail"]
        client.send({"type": "ping", "t": 7})
        assert (await client.next_message("pong"))["t"] == 7
        assert (await client.next_message())["type"] == "detections"
        metrics = await scrape(url)
    assert metrics['rtc_errors_total{kind="session_bad_message"}'] >= 10


async def test_control_message_flood_is_rate_limited_once(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app(message_rate=5.0)
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client:
        await client.next_message()
        flood_started = time.monotonic()
        for i in range(300):
            client.send({"type": "ping", "t": i})
        await wait_for(lambda: any(m.get("type") == "error" for m in list(client.messages._queue)))  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)  # let any stragglers arrive
        received = [client.messages.get_nowait() for _ in range(client.messages.qsize())]
        flood_s = time.monotonic() - flood_started
        pongs = [m for m in received if m["type"] == "pong"]
        errors = [m for m in received if m["type"] == "error"]
        assert [e["error"] for e in errors] == ["rate_limited"]  # one error for the whole flood
        # The burst (2 x rate) plus what refilled while the flood lasted — not 300.
        assert 1 <= len(pongs) <= 2 * 5 + 5 * flood_s + 1, (len(pongs), flood_s)
        await asyncio.sleep(1.0)  # the bucket refills: the client may talk again
        client.send({"type": "ping", "t": "again"})
        late = []  # a pong of the flood (an int t) may still be on its way: not this one
        while (pong := await client.next_message("pong"))["t"] != "again":
            late.append(pong["t"])
        assert all(isinstance(t, int) for t in late), late
        if late:  # those pings reached the server by now at the latest: the bucket refilled meanwhile
            until_s = time.monotonic() - flood_started
            assert len(pongs) + len(late) <= 2 * 5 + 5 * until_s + 1, (len(pongs), late, until_s)
        assert (await client.next_message())["type"] == "detections"
        errors = [m for m in list(client.messages._queue) if m.get("type") == "error"]  # type: ignore[attr-defined]
        assert not errors
        metrics = await scrape(url)
    assert metrics['rtc_errors_total{kind="session_rate_limited"}'] >= 250


class SizeSwitchingTrack(ImageTrack):
    """Sends ``first`` for ``switch_after`` frames, then ``second``: a resolution change."""

    def __init__(self, first: np.ndarray, second: np.ndarray, switch_after: int, fps: float = 15) -> None:
        super().__init__([first] * switch_after + [second] * 10_000, fps=fps)


# x264 (aiortc's H.264 encoder, like every browser's) encodes only even sizes, so odd frames
# are a VP8 case; both codecs the server negotiates get a mid-stream resolution change.
@pytest.mark.parametrize("codec,first", [("video/VP8", (641, 479)), ("video/H264", (640, 480))])
async def test_odd_sizes_and_a_resolution_change_mid_stream(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray,
    codec: str, first: tuple[int, int],
) -> None:
    import cv2

    start = cv2.resize(bus_frame, first)
    small = cv2.resize(bus_frame, (320, 240))
    url = await serve(aiohttp_server, make_app())
    async with DetectionClient(url, SizeSwitchingTrack(start, small, switch_after=15), codecs=(codec,)) as client:
        sizes: list[tuple[int, int]] = []
        while (320, 240) not in sizes:
            m = await client.next_message()
            sizes.append((m["width"], m["height"]))
            for d in m["detections"]:
                x1, y1, x2, y2 = d["box"]
                assert 0 <= x1 <= x2 <= m["width"] and 0 <= y1 <= y2 <= m["height"], (m["width"], d)
            assert len(sizes) < 200
        after = await client.next_message()
    assert first in sizes, sizes
    assert "bus" in {d["label"] for d in after["detections"]}


class SilentTrack(VideoStreamTrack):
    """A video track that never produces a frame."""

    async def recv(self):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()


async def test_a_track_that_sends_no_frames_is_reaped(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    app = stub_app(idle_timeout=1.0)
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, SilentTrack())  # type: ignore[arg-type]
    try:
        await client.connect()
        session = app[REGISTRY].get(client.session_id or "")
        assert session is not None
        await wait_for(lambda: len(app[REGISTRY]) == 0, timeout=20)
        assert session.close_reason == "no video"
        metrics = await scrape(url)
        assert metrics['rtc_errors_total{kind="session_idle_timeout"}'] == 1
        assert metrics['rtc_sessions_closed_total{reason="no_video"}'] == 1
    finally:
        await client.close()


async def test_a_peer_that_never_connects_is_reaped(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """The client posts an offer and never applies the answer: no ICE, no DTLS."""
    app = stub_app(connect_timeout=1.0)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{url}/offer", json={"sdp": await make_offer(), "type": "offer"})
        assert response.status == 200
        session = app[REGISTRY].get((await response.json())["session_id"])
    assert session is not None
    await wait_for(lambda: len(app[REGISTRY]) == 0, timeout=15)
    assert session.close_reason == "connect timeout" and session.source.pc.connectionState == "closed"
    assert (await scrape(url))['rtc_errors_total{kind="session_connect_timeout"}'] == 1


async def test_ice_gathering_that_hangs_is_a_503_and_leaves_nothing(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """A STUN server that never answers (a silent UDP socket on loopback) stalls gathering."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        stun = [{"urls": f"stun:127.0.0.1:{silent.getsockname()[1]}"}]
        app = stub_app(ice_servers=tuple(stun), ice_gather_timeout=1.0)
        url = await serve(aiohttp_server, app)
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"{url}/offer", json={"sdp": await make_offer(), "type": "offer"})
            body = await response.json()
        assert response.status == 503 and body["error"] == "ice_gather_timeout", body
        assert response.headers["Retry-After"]
        assert len(app[REGISTRY]) == 0
    finally:
        silent.close()


class FlakyDetector:
    """A detector (the stub here), except that every third call fails as a broken frame would."""

    def __init__(self, inner: Detector) -> None:
        self._inner = inner
        self.info = inner.info
        self._calls = 0
        self._lock = threading.Lock()

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        with self._lock:
            self._calls += 1
            fail = self._calls % 3 == 0
        if fail:
            raise ValueError("this frame cannot be processed")
        return self._inner.detect(images, thresholds)

    def warmup(self) -> None:
        self._inner.warmup()


async def test_frames_that_fail_processing_are_skipped_not_fatal(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector,
    bus_frame: np.ndarray,
) -> None:
    url = await serve(aiohttp_server, stub_app(detector_override=FlakyDetector(stub)))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client:
        error = await client.next_message("error")
        assert error["error"] == "frame_failed"
        messages = [await client.next_message() for _ in range(6)]  # the session goes on
        expected = [d.to_dict() for d in stub.detections(640, 480)]
        assert all(boxes(m["detections"]) == expected for m in messages)
        assert [m for m in list(client.messages._queue) if m.get("type") == "error"] == []  # type: ignore[attr-defined]
        metrics = await scrape(url)
    assert metrics['rtc_errors_total{kind="session_frame_failed"}'] >= 3


async def test_other_sessions_are_unharmed_by_a_misbehaving_one(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    url = await serve(aiohttp_server, stub_app(message_rate=5.0))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as good, \
            DetectionClient(url, ImageTrack(bus_frame, fps=15)) as bad:
        for _ in range(200):
            bad.channel.send("garbage")
        await bad.next_message("error")
        before = (await good.next_message())["frame_id"]
        after = [await good.next_message() for _ in range(5)]
        assert all(m["frame_id"] > before for m in after)
        assert [m for m in list(good.messages._queue) if m.get("type") == "error"] == []  # type: ignore[attr-defined]



class CorruptingTrack(VideoStreamTrack):
    """Sends VP8 it encodes itself (aiortc passes pre-encoded ``av.Packet``s through), with
    the packets of frames ``bad`` replaced by garbage: frames the server's decoder rejects."""

    def __init__(self, frame: np.ndarray, bad: range, fps: int = 15) -> None:
        super().__init__()
        import av

        self._frame, self._bad, self._fps = frame, bad, fps
        self._codec = av.CodecContext.create("libvpx", "w")
        self._codec.width, self._codec.height = frame.shape[1], frame.shape[0]
        self._codec.pix_fmt, self._codec.time_base = "yuv420p", fractions.Fraction(1, 90_000)
        self._codec.gop_size = 10  # regular keyframes: the decoder recovers after the garbage
        self._codec.options = {"deadline": "realtime", "cpu-used": "8"}
        self._count = 0
        self.sent_bad_pts: list[int] = []

    async def recv(self):  # type: ignore[no-untyped-def]
        import av

        await asyncio.sleep(1 / self._fps)
        while True:
            frame = av.VideoFrame.from_ndarray(self._frame, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = self._count * (90_000 // self._fps), fractions.Fraction(1, 90_000)
            index = self._count
            self._count += 1
            packets = self._codec.encode(frame)
            if packets:
                break
        packet = packets[0]
        if index in self._bad:
            garbage = av.Packet(bytes(np.random.default_rng(index).integers(0, 256, len(bytes(packet)), np.uint8)))
            garbage.pts, garbage.time_base = packet.pts, packet.time_base
            self.sent_bad_pts.append(int(packet.pts))
            return garbage
        return packet


async def test_frames_the_decoder_rejects_leave_the_session_working(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    url = await serve(aiohttp_server, make_app())
    track = CorruptingTrack(bus_frame, bad=range(15, 20))
    async with DetectionClient(url, track, codecs=("video/VP8",)) as client:  # type: ignore[arg-type]
        await wait_for(lambda: len(track.sent_bad_pts) == 5, timeout=30)
        last_bad = max(track.sent_bad_pts)
        after: list[set[str]] = []
        while not after or "bus" not in after[-1]:  # detections resume, right again after a keyframe
            m = await client.next_message(timeout=20)
            if m["pts"] is not None and m["pts"] > last_bad:
                after.append({d["label"] for d in m["detections"]})
            assert len(after) < 60, after
