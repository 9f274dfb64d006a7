"""Hostile pull sources (issue 20): no client's bytes can hurt the server through ``POST /streams``.

Each attack comes from a real server on loopback (``tests/hostile_media.py``, or the
suite's media server), bounded in time and bytes. Each test asserts the refusal *and*
that the server stayed healthy meanwhile: ``/healthz`` answered within 0.5 s all along,
and the server process's memory grew by a bounded amount. The server runs as its own
process (``python -m rtc_server``) so that its RSS is its own; the stop test runs the app
in process because it counts the source's threads.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtc_server.ingest.limits import DEFAULT_MAX_FRAME_PIXELS, check_frame_size
from rtc_server.ingest.policy import UrlRefused
from rtc_server.ingest.redact import redact, redact_text
from rtc_server.ingest.rtsp_relay import RtspRelay
from rtc_server.signaling.context import REGISTRY
from tests.helpers import ListSink, ServerProcess, cannot_run, scrape, self_signed, serve, wait_for
from tests.hostile_media import (
    EndlessPlaylist,
    GarbageStream,
    HealthProbe,
    Listener,
    RtspRedirector,
    StaticFolder,
    TlsFront,
    make_growing_ts,
    make_huge_clip,
)
from tests.pull_media import make_clip, rtsp_server

pytestmark = pytest.mark.slow

OPEN_TIMEOUT = 4.0
READ_TIMEOUT = 2.0
#: Loop latency allowed during an attack, and memory the server process may grow by.
MAX_LOOP_S = 0.5
MAX_RSS_GROWTH = 96 * 2**20
SECRETS = ("hunter2", "SIGNEDTOKEN", "CAMKEY")
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def server(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: only 127.0.0.1 may be pulled from (127.0.0.2 is "internal")."""
    log = tmp_path_factory.mktemp("issue-20-hostile") / "server.log"
    process = ServerProcess(log, {
        "RTC_MODEL": str(model_file), "RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.1/32",
        "RTC_SOURCE_OPEN_TIMEOUT": str(OPEN_TIMEOUT), "RTC_SOURCE_READ_TIMEOUT": str(READ_TIMEOUT),
        "RTC_RATE_LIMIT": "0", "RTC_LOG_LEVEL": "INFO"})
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("issue-20-hostile-media")
    make_clip(folder / "bus.ts", "mpegts", seconds=2.0)
    make_huge_clip(folder / "huge.mkv", 8192, 8192)  # the header says 8192x8192
    make_huge_clip(folder / "uhd.mkv", 3840, 2160)  # 4K fits the default cap
    make_growing_ts(folder / "grows.ts")  # 320x240, then 4096x2304 frames
    return folder


def call(server: ServerProcess, method: str, path: str, body: Any = None,
         timeout: float = 90.0) -> tuple[int, Any, float]:
    """(status, JSON or text, seconds) of one request to the server."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    elapsed = time.monotonic() - started
    try:
        return status, json.loads(text), elapsed
    except json.JSONDecodeError:
        return status, text, elapsed


def assert_healthy(probe: HealthProbe) -> None:
    assert probe.failures == 0 and probe.worst < MAX_LOOP_S, (probe.failures, probe.worst)
    assert probe.rss_growth < MAX_RSS_GROWTH, f"the server grew by {probe.rss_growth / 2**20:.0f} MiB"


def no_streams_left(server: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    while call(server, "GET", "/streams")[1]["streams"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert call(server, "GET", "/streams")[1]["streams"] == []


# ----- 1. an endless playlist -------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "why"), [
    ("bytes", "over 4194304 bytes (RTC_SOURCE_MAX_PLAYLIST_BYTES)"),
    ("segments", "more than 50000 segments (RTC_SOURCE_MAX_SEGMENTS)"),
    ("drip", f"did not open within {OPEN_TIMEOUT:g} s"),  # under every cap: the open deadline
])
def test_an_endless_playlist_is_refused_at_its_cap_or_the_open_deadline(server: ServerProcess, mode: str,
                                                                        why: str) -> None:
    attack = EndlessPlaylist(mode, max_seconds=40.0).start()
    try:
        with HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
            status, answer, elapsed = call(server, "POST", "/streams", {"url": attack.url})
    finally:
        attack.stop()
    assert (status, answer["error"]) == (422, "source_unavailable"), answer
    assert why in answer["detail"], answer
    assert elapsed < OPEN_TIMEOUT + 2.5, elapsed
    assert attack.sent < 64 * 2**20  # the server stopped reading: the attack did not go on
    assert_healthy(probe)
    no_streams_left(server)


# ----- 2. huge frames ---------------------------------------------------------------------------------
def test_frame_size_check_names_the_size_and_the_cap() -> None:
    assert check_frame_size(3840, 2160, DEFAULT_MAX_FRAME_PIXELS) is None
    assert check_frame_size(8192, 8192, DEFAULT_MAX_FRAME_PIXELS) == (
        "the frame is 8192x8192 (67108864 pixels), over the cap of 8294400 pixels (RTC_MAX_FRAME_PIXELS)")
    assert check_frame_size(0, 10, 100) is not None


def test_a_video_of_huge_frames_is_refused_before_it_costs_memory(server: ServerProcess, media: Path) -> None:
    with StaticFolder(media) as files, HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
        status, answer, _ = call(server, "POST", "/streams", {"url": f"http://127.0.0.1:{files.port}/huge.mkv"})
    assert (status, answer["error"]) == (422, "source_unavailable"), answer
    assert "8192x8192" in answer["detail"] and "RTC_MAX_FRAME_PIXELS" in answer["detail"], answer
    assert_healthy(probe)
    no_streams_left(server)


def test_frames_that_grow_past_the_cap_end_the_stream_naming_size_and_cap(server: ServerProcess,
                                                                          media: Path) -> None:
    """The header says 320x240; two seconds later the frames are 4096x2304."""
    with StaticFolder(media) as files, HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
        status, answer, _ = call(server, "POST", "/streams", {"url": f"http://127.0.0.1:{files.port}/grows.ts"})
        assert status == 201, answer
        assert answer["media"]["width"] == 320
        deadline = time.monotonic() + 20
        while call(server, "GET", f"/streams/{answer['id']}")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert call(server, "GET", f"/streams/{answer['id']}")[0] == 404  # ended
    assert "frame too large" in server.log and "4096x2304" in server.log, server.log[-2000:]
    assert_healthy(probe)


def test_4k_frames_fit_the_default_cap(server: ServerProcess, media: Path) -> None:
    with StaticFolder(media) as files:
        status, answer, _ = call(server, "POST", "/streams", {"url": f"http://127.0.0.1:{files.port}/uhd.mkv"})
    assert status == 201, answer
    assert (answer["media"]["width"], answer["media"]["height"]) == (3840, 2160)
    no_streams_left(server)  # three frames played, then "source ended"


# ----- 3. secrets in pull URLs ---------------------------------------------------------------------
def test_redact_masks_userinfo_and_every_query_value() -> None:
    assert redact("https://user:hunter2@cdn.test/live.m3u8?token=SIGNEDTOKEN&expires=1&flag") == \
        "https://user:***@cdn.test/live.m3u8?token=***&expires=***&***"
    assert redact("rtsp://SIGNEDTOKEN@cam.test/live") == "rtsp://***@cam.test/live"
    assert redact("rtsp://cam.test:554/live") == "rtsp://cam.test:554/live"
    assert redact_text("error: 'http://a:hunter2@h:99999/x?key=CAMKEY' failed") == \
        "error: 'http://a:***@h:99999/x?key=***' failed"


def test_pull_url_secrets_never_show_in_views_answers_or_logs(server: ServerProcess, media: Path) -> None:
    with StaticFolder(media) as files, HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
        base = f"http://user:hunter2@127.0.0.1:{files.port}"
        status, answer, _ = call(server, "POST", "/streams",
                                 {"url": f"{base}/bus.ts?token=SIGNEDTOKEN&key=CAMKEY", "loop": True})
        assert status == 201, answer
        shown = [json.dumps(answer)]
        for path in ("/streams", f"/streams/{answer['id']}", "/sessions"):
            code, body, _ = call(server, "GET", path)
            assert code == 200
            shown.append(json.dumps(body))
        assert f"http://user:***@127.0.0.1:{files.port}/bus.ts?token=***&key=***" in shown[1]
        failed = call(server, "POST", "/streams", {"url": f"{base}/missing.ts?token=SIGNEDTOKEN"})[1]
        refused = call(server, "POST", "/streams", {"url": "http://127.0.0.2:9/x.ts?token=SIGNEDTOKEN"})[1]
        shown += [json.dumps(failed), json.dumps(refused)]
        assert (failed["error"], refused["error"]) == ("source_unavailable", "url_refused")
        assert call(server, "DELETE", f"/streams/{answer['id']}")[0] == 204
    for text in (*shown, server.log):
        for secret in SECRETS:
            assert secret not in text, (secret, text[-3000:])
    assert_healthy(probe)


# ----- 4. RTSP redirects -----------------------------------------------------------------------------
def test_an_rtsp_redirect_to_a_refused_address_is_refused_and_never_followed(server: ServerProcess) -> None:
    """Only 127.0.0.1/32 is allowed; the camera there redirects DESCRIBE to 127.0.0.2."""
    internal = Listener("127.0.0.2", hold=15.0).start()
    camera = RtspRedirector(f"rtsp://127.0.0.2:{internal.port}/admin?key=CAMKEY").start()
    try:
        with HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
            status, answer, elapsed = call(server, "POST", "/streams", {"url": camera.url})
            time.sleep(0.5)
    finally:
        camera.stop()
        internal.stop()
    assert (status, answer["error"]) == (400, "url_refused"), answer
    assert "302" in answer["detail"] and "redirect" in answer["detail"] and "CAMKEY" not in answer["detail"]
    assert camera.connections == 1 and internal.connections == 0  # never reached
    assert elapsed < OPEN_TIMEOUT
    assert_healthy(probe)


# ----- 5. a stalled RTSP read and stop_timeout ---------------------------------------------------------
def _source_threads(stream_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"pull-{stream_id[:8]}")]


@pytest.mark.parametrize("camera_kind", ["stalled", "black-holed"])
async def test_stopping_a_stalled_rtsp_source_is_bounded_and_leaves_nothing(
        aiohttp_server: Any, make_app: Callable[..., web.Application], camera_kind: str) -> None:
    """A camera that accepts and never answers, or one whose SYNs are dropped (a full accept
    queue); the stream is ended while the source waits on it (its own timeouts are 30 s
    away): the thread and the socket are gone within stop_timeout."""
    camera = Listener(hold=60.0).start() if camera_kind == "stalled" else None
    hole = None if camera is not None else BlackHole()
    port = camera.port if camera is not None else hole.port  # type: ignore[union-attr]
    try:
        app = make_app(source_allow_networks=("127.0.0.1/32",), source_open_timeout=30.0,
                       source_read_timeout=30.0, sources=({"url": f"rtsp://127.0.0.1:{port}/live"},))
        url = await serve(aiohttp_server, app)
        (stream,) = list(app[REGISTRY])
        if camera is not None:
            await wait_for(camera.accepted.is_set, 15)
        await asyncio.sleep(1.0)  # blocked: reading the answer that never comes, or connecting
        assert _source_threads(stream.id)
        lags: list[float] = []
        ticking = asyncio.create_task(_tick(lags))
        started = time.monotonic()
        await stream.close("deleted")
        took = time.monotonic() - started
        await wait_for(lambda: not _source_threads(stream.id) and (camera is None or camera.closed >= 1),
                       stream.limits.stop_timeout)
        ticking.cancel()
        assert took < stream.limits.stop_timeout, took
        assert max(lags, default=0.0) < MAX_LOOP_S
        assert (await scrape(url)).get('rtc_errors_total{kind="session_close_timeout"}', 0.0) == 0.0
    finally:
        if camera is not None:
            camera.stop()
        if hole is not None:
            hole.close()


class BlackHole:
    """A loopback port whose accept queue is full: the kernel drops further SYNs, so a
    connect there hangs (as to a black-holed address) until its own timeout."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self._fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self._fillers.append(filler)
        probe = socket.socket()
        probe.setblocking(False)
        probe.connect_ex(("127.0.0.1", self.port))
        _, writable, _ = select.select([], [probe], [], 0.5)
        probe.close()
        if writable:
            self.close()
            cannot_run("this kernel completes connects past a full accept queue: no black hole on loopback")

    def close(self) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()


async def _tick(lags: list[float], interval: float = 0.02) -> None:
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval)
        lags.append(time.monotonic() - started - interval)


# ----- 6. corrupt packets --------------------------------------------------------------------------------
def test_a_source_sending_only_garbage_is_counted_and_reconnected(server: ServerProcess) -> None:
    attack = GarbageStream(good=6.0, max_seconds=30.0).start()  # more than FFmpeg probes at once
    try:
        with HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
            status, answer, _ = call(server, "POST", "/streams", {"url": attack.url})
            assert status == 201, answer
            deadline = time.monotonic() + 20
            view = answer
            while view["reconnects"] < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
                view = call(server, "GET", f"/streams/{answer['id']}")[1]
            corrupt = server.metric("rtc_pull_corrupt_packets_total")
            assert call(server, "DELETE", f"/streams/{answer['id']}")[0] == 204
    finally:
        attack.stop()
    assert view["reconnects"] >= 1, view
    assert "nothing decodable for 2 s" in (view["last_error"] or ""), view
    assert view["corrupt_packets"] > 0 and corrupt >= view["corrupt_packets"], (view, corrupt)
    assert_healthy(probe)


# ----- the relay carries real cameras --------------------------------------------------------------------
async def test_rtsps_goes_through_the_relay_with_tls(aiohttp_server: Any, make_app: Callable[..., web.Application],
                                                     tmp_path: Path) -> None:
    """The relay speaks TLS to an RTSPS camera (certificates unverified, as FFmpeg's tls did)
    and FFmpeg plain RTSP to the relay; a real camera still detects (plain RTSP through the
    relay: ``tests/test_pull.py``)."""
    camera = rtsp_server()
    await camera.start()
    front = TlsFront(camera.port, *self_signed(tmp_path)).start()
    try:
        app = make_app(source_allow_networks=("127.0.0.1/32",))
        url = await serve(aiohttp_server, app)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/streams", json={"url": f"rtsps://127.0.0.1:{front.port}/bus"}) as response:
                answer = await response.json()
            assert response.status == 201, answer
            stream = app[REGISTRY].get(answer["id"])
            assert stream is not None
            sink = ListSink()
            stream.add_sink(sink)
            await wait_for(lambda: "bus" in sink.labels_from(0), 30)
            await stream.close("closed by test")
        assert front.connections == 1
    finally:
        front.stop()
        await camera.stop()


def test_the_relay_frames_rtsp_and_refuses_redirects_without_a_network() -> None:
    """The relay's reading of the server's bytes: interleaved packets and messages with
    bodies pass whole, any 3xx or REDIRECT is refused, an endless head is bounded."""
    relay = RtspRelay("127.0.0.1", 9, tls_host=None, open_timeout=1.0)
    sdp = b"v=0\r\n"
    answer = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\n" + sdp
    packet = b"$\x00\x00\x03abc"
    buffer = bytearray(answer + packet + b"$\x00\x00")
    assert relay._unit_size(buffer) == len(answer)
    del buffer[:len(answer)]
    assert relay._unit_size(buffer) == len(packet)
    del buffer[:len(packet)]
    assert relay._unit_size(buffer) is None  # an incomplete packet waits for more
    assert relay._unit_size(bytearray(answer[:-1])) is None  # so does an incomplete body
    for refused in (b"RTSP/1.0 301 Moved\r\nLocation: rtsp://10.0.0.1/x?key=CAMKEY\r\n\r\n",
                    b"REDIRECT rtsp://127.0.0.1/x RTSP/1.0\r\nLocation: rtsp://169.254.169.254/\r\n\r\n"):
        with pytest.raises(UrlRefused, match="do not follow RTSP redirects") as caught:
            relay._unit_size(bytearray(refused))
        assert "CAMKEY" not in caught.value.detail
    with pytest.raises(ValueError, match="head over"):
        relay._unit_size(bytearray(b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * 20000))
