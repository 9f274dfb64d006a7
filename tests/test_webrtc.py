"""Real aiortc peers over loopback: client -> POST /offer -> server -> detections back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.engine.detector import DetectionResult, Detector
from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import REGISTRY

from .helpers import ServerFactory, scrape, serve, wait_for


async def test_client_streams_bus_frames_and_gets_detections(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=30))
    await client.connect()
    try:
        assert app[REGISTRY].get(client.session_id or "") is not None
        messages = [await client.next_message() for _ in range(5)]
    finally:
        await client.close()

    for m in messages:
        assert (m["width"], m["height"]) == (640, 480)
        labels = {d["label"] for d in m["detections"]}
        assert {"bus", "person"} <= labels, labels
        assert set(m["timing"]) >= {"queue_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "server_ms"}
        assert m["pts"] in client.track.sent_at  # the pts we sent, exactly
        assert client.latency_ms(m) is not None and client.latency_ms(m) > 0
        assert m["frames"]["received"] >= m["frames"]["processed"] > 0
    ids = [m["frame_id"] for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # The client hung up: the server forgets the session (tasks cancelled, pc closed).
    await wait_for(lambda: len(app[REGISTRY]) == 0)


class SlowDetector:
    """The real detector behind a fixed extra delay, and a flag showing when it runs."""

    def __init__(self, inner: Detector, delay: float) -> None:
        self._inner, self._delay = inner, delay
        self.info = inner.info
        self.running = threading.Event()

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        self.running.set()
        try:
            time.sleep(self._delay)
            return self._inner.detect(images, thresholds)
        finally:
            self.running.clear()

    def warmup(self) -> None:
        self._inner.warmup()


async def test_slow_detector_answers_about_the_newest_frame(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], detector: Detector,
    bus_frame: np.ndarray,
) -> None:
    """At 30 fps against a detector taking >= 300 ms, frames must be dropped, not queued.

    Each message says which frame it answers (``frame_id``) and how many frames the session
    had received when it was sent. With newest-wins, the difference is only the frames that
    arrived while that one frame was processed (~10); a backlog would make it grow with
    every message.
    """
    slow = SlowDetector(detector, delay=0.3)
    url = await serve(aiohttp_server, make_app(detector_override=slow))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client:
        messages = [await client.next_message() for _ in range(10)]

    lags = [m["frames"]["received"] - 1 - m["frame_id"] for m in messages]
    per_detection = 30 * 0.3  # frames arriving during one slowed detection
    assert max(lags[2:]) <= 3 * per_detection, lags
    assert messages[-1]["frames"]["dropped"] >= 5 * per_detection / 2, messages[-1]["frames"]
    assert lags[-1] <= max(lags[1:5]) + per_detection, lags  # no growth over the run
    gaps = np.diff([m["frame_id"] for m in messages])
    # Processed frames skip the stale ones. A single gap may be 1 when a loaded machine
    # delivers frames slower than the detector runs; most must not be.
    assert (gaps > 1).sum() >= len(gaps) - 2, gaps


async def test_event_loop_stays_responsive_during_inference(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], detector: Detector,
    bus_frame: np.ndarray,
) -> None:
    """A probe is answered *while* a (slowed) detection is running: inference is off the loop."""
    import aiohttp

    slow = SlowDetector(detector, delay=1.0)
    url = await serve(aiohttp_server, make_app(detector_override=slow))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)), aiohttp.ClientSession() as http:
        await asyncio.get_running_loop().run_in_executor(None, slow.running.wait, 20)
        response = await http.get(f"{url}/healthz")
        assert response.status == 200
        assert slow.running.is_set(), "the probe should have been answered mid-detection"


async def test_server_shutdown_closes_sessions(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15))
    await client.connect()
    try:
        await client.next_message()
        session = app[REGISTRY].get(client.session_id or "")
        assert session is not None
        await app[REGISTRY].close_all()
        assert len(app[REGISTRY]) == 0 and session.closed
        assert session.source.pc.connectionState == "closed"
    finally:
        await client.close()


async def test_live_thresholds_over_the_data_channel(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    url = await serve(aiohttp_server, make_app())
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client:
        client.send({"type": "config", "classes": [5]})
        ack = await client.next_message("config")
        assert ack["classes"] == [5]
        assert ack["class_names"][5] == "bus" and len(ack["class_names"]) == 80
        await client.next_message()  # may predate the change
        m = await client.next_message()
        assert {d["label"] for d in m["detections"]} == {"bus"}
        client.send({"type": "config", "conf": 7})
        error = await client.next_message("error")
        assert error["error"] == "bad_message"


@pytest.mark.parametrize("fps", [30])
async def test_answer_offers_only_loopback_candidates(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray, fps: int
) -> None:
    url = await serve(aiohttp_server, make_app())
    client = DetectionClient(url, ImageTrack(bus_frame, fps=fps))
    try:
        await client.connect()
        remote = client.pc.remoteDescription.sdp
        candidates = [ln for ln in remote.splitlines() if ln.startswith("a=candidate:")]
        assert candidates and all(ln.split()[4] == "127.0.0.1" for ln in candidates), candidates
    finally:
        await client.close()


async def test_metrics_count_sessions_and_frames(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)

    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client:
        for _ in range(3):
            await client.next_message()
        during = await scrape(url)
    assert during["rtc_sessions_active"] == 1 and during["rtc_sessions_total"] == 1
    assert during["rtc_frames_processed_total"] >= 3
    assert during["rtc_frames_received_total"] >= during["rtc_frames_processed_total"]
    assert during['rtc_stage_seconds_count{stage="inference"}'] >= 3
    # The receive path releases frames on the RTP marker bit (on by default).
    assert during['rtc_video_frames_released_total{rule="marker"}'] >= 3
    await wait_for(lambda: len(app[REGISTRY]) == 0)
    assert (await scrape(url))["rtc_sessions_active"] == 0
