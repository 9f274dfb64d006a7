"""Real aiortc peers over loopback: client -> POST /offer -> server -> detections back."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import REGISTRY

from .helpers import ServerFactory, scrape, serve, wait_for
from .stub_detector import StubDetector, boxes


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


async def test_a_held_detector_answers_about_the_newest_frame(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    """At 30 fps against a detector the test holds until ten more frames have arrived,
    frames must be dropped, not queued — counted exactly, with no clock involved.

    Each message says which frame it answers (``frame_id``) and the session's counts when
    it was sent. With newest-wins, the frame that runs next is the one waiting when the
    previous result is delivered (the result's delivery and the next dispatch are one step
    on the event loop): the last received, ``received - 1``; every other frame that
    arrived meanwhile is dropped, so ``dropped == received - processed - 1`` (one waits).
    A backlog would run ``frame_id + 1`` next and drop nothing.
    """
    held = StubDetector(gated=True)
    app = stub_app(detector_override=held)
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client:
        stream = app[REGISTRY].get(client.session_id or "")
        assert stream is not None
        for _ in range(5):
            await held.entered()
            arrived = stream.counts.received + 10
            await wait_for(lambda n=arrived: stream.counts.received >= n)  # frames pile up while held
            held.release()
        messages = [await client.next_message() for _ in range(5)]
        held.release(16)  # whatever runs while the client hangs up

    for k, (m, after) in enumerate(itertools.pairwise(messages), start=1):
        frames = m["frames"]
        assert frames["processed"] == k, frames
        assert frames["dropped"] == frames["received"] - frames["processed"] - 1, frames
        assert after["frame_id"] == frames["received"] - 1, (m, after)  # the newest, not the next
        assert after["frame_id"] - m["frame_id"] >= 10  # the ten (or more) held frames were skipped
    # Five holds of ten arrivals or more each: at least 51 received, 5 processed, 1 waiting.
    assert messages[-1]["frames"]["dropped"] >= 45, messages[-1]["frames"]


async def test_event_loop_stays_responsive_during_inference(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray,
) -> None:
    """A probe is answered *while* a detection is running (held by the test): inference is off the loop."""
    import aiohttp

    held = StubDetector(gated=True)
    url = await serve(aiohttp_server, stub_app(detector_override=held))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)), aiohttp.ClientSession() as http:
        await held.entered()
        response = await http.get(f"{url}/healthz")
        assert response.status == 200
        assert held.running.is_set(), "the probe should have been answered mid-detection"
        held.release(64)


async def test_server_shutdown_closes_sessions(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
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
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector,
    bus_frame: np.ndarray
) -> None:
    url = await serve(aiohttp_server, stub_app())
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client:
        client.send({"type": "config", "classes": [5]})
        ack = await client.next_message("config")
        assert ack["classes"] == [5]
        assert ack["class_names"][5] == "bus" and len(ack["class_names"]) == 80
        await client.next_message()  # may predate the change
        m = await client.next_message()
        # Exactly the stub's bus, none of its people: the class filter reached the detector.
        only_bus = stub.detections(640, 480, Thresholds(classes=frozenset({5})))
        assert {d["label"] for d in m["detections"]} == {"bus"}
        assert boxes(m["detections"]) == [d.to_dict() for d in only_bus]
        client.send({"type": "config", "conf": 7})
        error = await client.next_message("error")
        assert error["error"] == "bad_message"


@pytest.mark.parametrize("fps", [30])
async def test_answer_offers_only_loopback_candidates(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray, fps: int
) -> None:
    url = await serve(aiohttp_server, stub_app())
    client = DetectionClient(url, ImageTrack(bus_frame, fps=fps))
    try:
        await client.connect()
        remote = client.pc.remoteDescription.sdp
        candidates = [ln for ln in remote.splitlines() if ln.startswith("a=candidate:")]
        assert candidates and all(ln.split()[4] == "127.0.0.1" for ln in candidates), candidates
    finally:
        await client.close()


async def test_metrics_count_sessions_and_frames(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
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
