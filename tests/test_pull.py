"""Pull sources end to end: a real RTSP server (gst-rtsp-server) and real HTTP-served files
(MP4, MPEG-TS, HLS made from bus.jpg), through ``POST /streams``, the real model, to a sink.

Detections are read on the server side — a sink added to the stream through the app's
registry — as any consumer (data channel, SSE) would get them. The sources restart for
real: their process is stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from rtc_server.engine.detector import DetectionResult, Detector
from rtc_server.engine.yolo import Thresholds
from rtc_server.ingest.source import PullSource
from rtc_server.signaling.context import REGISTRY
from rtc_server.streams.stream import Stream
from tests.helpers import ListSink, scrape, serve, wait_for
from tests.pull_media import LiveHls, MediaProcess, make_clip, make_hls, media_server, rtsp_server

pytestmark = pytest.mark.slow
LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("issue-13-pull-media")
    make_clip(folder / "bus.mp4", "mp4")  # the index (moov) at the end: read with Range requests
    make_clip(folder / "bus.ts", "mpegts")
    make_hls(folder)
    return folder


@pytest.fixture
async def http_media(media: Path) -> AsyncIterator[MediaProcess]:
    server = media_server(media)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def rtsp() -> AsyncIterator[MediaProcess]:
    server = rtsp_server()
    await server.start()
    yield server
    await server.stop()


async def start_stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with http.post(f"{url}/streams", json=body) as response:
        answer = await response.json()
        assert response.status == 201, answer
        assert response.headers["Location"] == f"/streams/{answer['id']}"
        assert answer["source"] == "pull" and answer["state"] == "playing"
        return str(answer["id"])


def watch(app: web.Application, stream_id: str) -> tuple[Stream, ListSink]:
    stream = app[REGISTRY].get(stream_id)
    assert stream is not None and isinstance(stream.source, PullSource)
    sink = ListSink()
    stream.add_sink(sink)
    return stream, sink


async def test_rtsp_source_detects_and_recovers_after_the_server_restarts(
        aiohttp_server: Any, make_app: Callable[..., web.Application], rtsp: MediaProcess) -> None:
    app = make_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(http, url, {"url": f"rtsp://127.0.0.1:{rtsp.port}/bus"})
        stream, sink = watch(app, stream_id)
        await wait_for(lambda: {"bus", "person"} <= sink.labels_from(0), 30)
        source = stream.source
        assert isinstance(source, PullSource) and source.info is not None
        assert (source.info.format, source.info.codec, source.info.finite) == ("rtsp", "h264", False)

        await rtsp.stop()  # the camera goes away...
        await wait_for(lambda: source.state == "reconnecting", 30)
        failures = 'rtc_pull_open_failures_total{kind="connection"}'
        await wait_for_metric(url, failures, 1)  # ...and stays away for at least one attempt
        seen = stream.counts.received  # frames from the restarted server are numbered from here
        await rtsp.start()  # same port
        await wait_for(lambda: {"bus", "person"} <= sink.labels_from(seen), 60)

        assert app[REGISTRY].get(stream_id) is stream and not stream.closed
        assert source.reconnects >= 2 and source.state == "playing"
        assert (await scrape(url))["rtc_pull_reconnects_total"] >= 2
        listed = await (await http.get(f"{url}/streams")).json()
        assert [s["id"] for s in listed["streams"]] == [stream_id]
        assert listed["streams"][0]["reconnects"] == source.reconnects

        async with http.delete(f"{url}/streams/{stream_id}") as response:
            assert response.status == 204
        assert len(app[REGISTRY]) == 0 and stream.close_reason == "deleted"
        assert "session_close_timeout" not in await (await http.get(f"{url}/metrics")).text()
        async with http.get(f"{url}/streams/{stream_id}") as response:
            assert response.status == 404


async def wait_for_metric(url: str, name: str, at_least: float) -> None:
    async with asyncio.timeout(60):
        while (await scrape(url)).get(name, 0.0) < at_least:
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("name", ["bus.mp4", "bus.m3u8"])
async def test_an_http_file_plays_once_with_detections_then_ends_the_stream(
        aiohttp_server: Any, make_app: Callable[..., web.Application], http_media: MediaProcess, name: str) -> None:
    app = make_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(http, url, {"url": f"http://127.0.0.1:{http_media.port}/{name}"})
        stream, sink = watch(app, stream_id)
        source = stream.source
        assert isinstance(source, PullSource) and source.info is not None and source.info.finite
        # A 3 s clip, played at its own rate. The stream says closed as its close path
        # begins and leaves the registry as it ends (seen here between the two): wait for both.
        await wait_for(lambda: stream.closed and len(app[REGISTRY]) == 0, 30)
        assert stream.close_reason == "source ended" and len(app[REGISTRY]) == 0
    assert {"bus", "person"} <= sink.labels_from(0)
    # Paced at 15 fps rather than decoded in a burst: many frames reached the stream.
    assert stream.counts.received >= 20, stream.counts


async def test_a_looping_http_stream_recovers_after_the_http_server_restarts(
        aiohttp_server: Any, make_app: Callable[..., web.Application], http_media: MediaProcess) -> None:
    app = make_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(
            http, url, {"url": f"http://127.0.0.1:{http_media.port}/bus.ts", "loop": True, "conf": 0.3})
        stream, sink = watch(app, stream_id)
        assert stream.settings.thresholds.conf == 0.3
        await wait_for(lambda: {"bus", "person"} <= sink.labels_from(0), 30)
        source = stream.source
        assert isinstance(source, PullSource)

        await http_media.stop()
        await wait_for_metric(url, 'rtc_pull_open_failures_total{kind="connection"}', 1)
        seen = stream.counts.received
        await http_media.start()
        await wait_for(lambda: {"bus", "person"} <= sink.labels_from(seen), 60)
        assert app[REGISTRY].get(stream_id) is stream and source.reconnects >= 1
        await stream.close("closed by test")


async def test_rtsp_goes_to_the_checked_address_not_to_the_name(
        aiohttp_server: Any, make_app: Callable[..., web.Application], rtsp: MediaProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg is handed the checked IP, never the name: it could not resolve this one."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "camera.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    app = make_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(http, url, {"url": f"rtsp://user:pw@camera.test:{rtsp.port}/bus"})
        stream, sink = watch(app, stream_id)
        await wait_for(lambda: "bus" in sink.labels_from(0), 30)
        view = await (await http.get(f"{url}/streams/{stream_id}")).json()
        assert view["url"] == f"rtsp://user:***@camera.test:{rtsp.port}/bus"  # no password shown
        assert view["media"] == {"format": "rtsp", "codec": "h264", "width": 540, "height": 720, "live": True}
        await stream.close("closed by test")


async def test_a_live_hls_playlist_is_followed_as_it_grows(
        aiohttp_server: Any, make_app: Callable[..., web.Application], tmp_path: Path) -> None:
    folder = tmp_path / "issue-13-pull-live"
    folder.mkdir()
    live = LiveHls(folder)
    live.start()
    server = media_server(folder)
    try:
        await wait_for(lambda: (folder / "live.m3u8").exists() and "live2.ts" in (folder / "live.m3u8").read_text(),
                       30)
        await server.start()
        app = make_app(source_allow_networks=LOOPBACK)
        url = await serve(aiohttp_server, app)
        async with aiohttp.ClientSession() as http:
            stream_id = await start_stream(http, url, {"url": f"http://127.0.0.1:{server.port}/live.m3u8"})
            stream, sink = watch(app, stream_id)
            source = stream.source
            assert isinstance(source, PullSource) and source.info is not None
            assert (source.info.format, source.info.finite) == ("hls", False)
            await wait_for(lambda: {"bus", "person"} <= sink.labels_from(0), 30)
            # Segments written after the open arrive too: the playlist is reloaded as it grows.
            reached = stream.counts.received
            await wait_for(lambda: stream.counts.received >= reached + 2 * 15, 30)
            assert source.reconnects == 0 and not stream.closed
            await stream.close("closed by test")  # mid-wait for the next playlist reload
            text = await (await http.get(f"{url}/metrics")).text()
            assert "session_close_timeout" not in text  # its thread ended: nothing left behind
    finally:
        await server.stop()
        live.stop()


async def test_local_files_only_when_allowed_and_fenced_to_files(
        aiohttp_server: Any, make_app: Callable[..., web.Application], media: Path, http_media: MediaProcess,
        tmp_path: Path) -> None:
    """``file:`` needs RTC_SOURCE_ALLOW_FILE; even then FFmpeg may open files only, so a
    playlist on disk cannot send it onto the network."""
    local = tmp_path / "issue-13-pull-local.m3u8"
    local.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n"
                     f"http://127.0.0.1:{http_media.port}/seg0.ts\n#EXT-X-ENDLIST\n")
    app = make_app(source_allow_file=True, source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(http, url, {"url": f"file://{media / 'bus.mp4'}"})
        stream, sink = watch(app, stream_id)
        await wait_for(lambda: stream.closed, 30)
        assert stream.close_reason == "source ended" and {"bus", "person"} <= sink.labels_from(0)
        async with http.post(f"{url}/streams", json={"url": f"file://{local}"}) as response:
            answer = await response.json()
        assert (response.status, answer["error"]) == (422, "source_unavailable"), answer
    assert len(app[REGISTRY]) == 0


async def test_a_frozen_rtsp_server_is_a_drop_after_the_read_timeout(
        aiohttp_server: Any, make_app: Callable[..., web.Application], rtsp: MediaProcess) -> None:
    """A camera that hangs with its connection open (SIGSTOP): no error, no end, just no
    data. The read timeout turns that into a drop; once it thaws, the stream resumes."""
    app = make_app(source_allow_networks=LOOPBACK, source_read_timeout=2.0, source_open_timeout=2.0)
    url = await serve(aiohttp_server, app)
    assert rtsp.process is not None
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(http, url, {"url": f"rtsp://127.0.0.1:{rtsp.port}/bus"})
        stream, sink = watch(app, stream_id)
        await wait_for(lambda: "bus" in sink.labels_from(0), 30)
        source = stream.source
        assert isinstance(source, PullSource)
        rtsp.process.send_signal(signal.SIGSTOP)
        try:
            await wait_for(lambda: source.reconnects >= 1, 30)
            assert (source.last_error or "").startswith("TimeoutError: no data for 2 s"), source.last_error
        finally:
            rtsp.process.send_signal(signal.SIGCONT)
        seen = stream.counts.received
        await wait_for(lambda: "bus" in sink.labels_from(seen), 60)
        assert app[REGISTRY].get(stream_id) is stream
        await stream.close("closed by test")


class SlowDetector:
    """The real detector behind a fixed extra delay per call, counting the frames it ran:
    a model slower than the source's frame rate."""

    def __init__(self, inner: Detector, delay_s: float) -> None:
        self._inner = inner
        self.info = inner.info
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self.taken = 0

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        with self._lock:
            self.taken += len(images)
        time.sleep(self._delay_s)
        return self._inner.detect(images, thresholds)

    def warmup(self) -> None:
        self._inner.warmup()


async def test_a_pull_stream_reports_every_dropped_frame_once(
        aiohttp_server: Any, make_app: Callable[..., web.Application], detector: Detector, media: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames decoded faster than the model takes them (a 15 fps clip, a model at ~3/s, and
    an event loop that is busy for a while) pass one newest-wins slot: ``GET /sessions``,
    ``GET /streams`` and Prometheus report drops equal to frames decoded minus frames taken,
    within what is in flight (one frame in the mailbox, one in the model)."""
    decoded = 0
    hand_over = PullSource._offer

    def counting(self: PullSource, frame: Any, pts: int | None) -> None:  # in the source's thread
        nonlocal decoded
        decoded += 1
        hand_over(self, frame, pts)

    monkeypatch.setattr(PullSource, "_offer", counting)
    model = SlowDetector(detector, 0.3)
    app = make_app(model, source_allow_file=True)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream_id = await start_stream(http, url, {"url": f"file://{media / 'bus.mp4'}", "loop": True})
        _, sink = watch(app, stream_id)
        await wait_for(lambda: len(sink.messages) >= 2, 30)
        for _ in range(3):  # the event loop busy (a long handler, a GC pause): frames keep coming
            time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop is the point
            await asyncio.sleep(0.05)
        await wait_for(lambda: decoded >= 60, 30)
        decoded_before, taken_before = decoded, model.taken
        sessions = (await (await http.get(f"{url}/sessions")).json())["sessions"]
        listed = (await (await http.get(f"{url}/streams/{stream_id}")).json())["counts"]
        metrics = await scrape(url)
        decoded_after, taken_after = decoded, model.taken
        (frames,) = [s["frames"] for s in sessions if s["id"] == stream_id]
        in_flight = 3  # one decoded and not yet handed over, one in the mailbox, one taken not yet in the model
        assert decoded_before <= frames["received"] <= decoded_after, (frames, decoded_before, decoded_after)
        assert decoded_before - taken_after - in_flight <= frames["dropped"] <= decoded_after - taken_before, (
            frames, decoded_before, decoded_after, taken_before, taken_after)
        assert frames["dropped"] > 0.5 * frames["received"], frames  # the model really was the slower
        assert frames["dropped"] <= listed["dropped"] <= metrics["rtc_frames_dropped_total"], (frames, listed)
        assert listed["dropped"] <= decoded_after - taken_before
        assert metrics["rtc_frames_dropped_total"] <= decoded - taken_before
        assert "rtc_pull_frames_skipped_total" not in metrics  # no second slot, no second count
        async with http.delete(f"{url}/streams/{stream_id}") as response:
            assert response.status == 204
