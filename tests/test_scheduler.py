"""The scheduler: round-robin over streams, the newest frame at dispatch, batches of ready
streams, per-stream sampling, and ``/predict``'s bounded share.

What runs is the stub detector (``tests/stub_detector.py``): the order of dispatches, not
what the model finds, is under test here (batches against single frames on the real model:
``tests/test_backends.py``). To make the order observable without timing, the stub is
gated: it records which frames each call got (a marker pixel says which stream and which
frame) and holds the call until the test lets it go, so the test decides when a worker is
busy. Pacing (``max_fps``, the batch wait) runs on a ``TestClock`` the test moves forward,
so it is checked without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.app import build_registry
from rtc_server.config import Settings
from rtc_server.engine.catalog import ModelCatalog
from rtc_server.engine.scheduler import Scheduler, SchedulerConfig, plan_workers
from rtc_server.signaling.context import INFERENCE
from rtc_server.streams.registry import StreamRegistry
from rtc_server.streams.stream import Stream
from tests.conftest import FIXTURES
from tests.helpers import ListSink, ServerFactory, serve, wait_for

from .stub_detector import Marker, StubDetector, boxes


def marked(frame: np.ndarray, stream: int, count: int) -> np.ndarray:
    """A copy of ``frame`` whose top-left pixel says which stream and which frame it is."""
    out = frame.copy()
    out[0, 0] = (stream, count, 7)
    return out


class TestClock:
    """The scheduler's clock in these tests: ``perf_counter`` (the scale of the streams'
    arrival stamps) plus an offset that only the test moves, forward, with ``advance``."""

    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def gated() -> StubDetector:
    return StubDetector(gated=True)


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


async def open_streams(registry: StreamRegistry, count: int, **max_fps: float) -> list[tuple[Stream, ListSink]]:
    out = []
    for i in range(count):
        stream = registry.open("offer", replace(registry.defaults(), max_fps=max_fps.get(chr(ord("a") + i))))
        sink = ListSink()
        stream.add_sink(sink)
        stream.start()
        out.append((stream, sink))
    return out


@pytest.fixture
async def lanes(gated: StubDetector, clock: TestClock,
                request: pytest.FixtureRequest) -> AsyncIterator[tuple[Scheduler, StreamRegistry]]:
    config = getattr(request, "param", SchedulerConfig())
    scheduler = Scheduler(ModelCatalog.of(gated), config, clock=clock)
    registry = build_registry(Settings(model=Path("yolo11n.onnx"), max_sessions=8), scheduler)
    yield scheduler, registry
    for _ in range(16):  # let any held call finish so the workers can stop
        gated.release()
    await registry.close_all()
    scheduler.close()


async def test_round_robin_serves_ready_streams_in_turn(lanes: tuple[Scheduler, StreamRegistry],
                                                       gated: StubDetector, bus_frame: np.ndarray) -> None:
    """Three streams that always have a frame get the one worker strictly in turn, each
    time with the frame pushed last before its dispatch."""
    _, registry = lanes
    streams = await open_streams(registry, 3)
    for i, (stream, _) in enumerate(streams):
        stream.push(marked(bus_frame, i, 0), None)
    dispatched: list[Marker] = []
    for count in range(1, 10):
        (got,) = await gated.entered()
        dispatched.append(got)
        for i, (stream, _) in enumerate(streams):
            stream.push(marked(bus_frame, i, count), None)
        gated.release()
    assert [s for s, _ in dispatched] == [0, 1, 2] * 3
    # Each dispatch took the frame pushed last before it (frames 0..k-1 of that stream
    # were replaced while others ran), not the one it had when its turn was decided.
    assert [c for _, c in dispatched] == list(range(9))
    await wait_for(lambda: all(len(sink.detections()) == 3 for _, sink in streams))


async def test_newest_frame_at_dispatch_replaces_frames_pushed_while_busy(
        lanes: tuple[Scheduler, StreamRegistry], gated: StubDetector, bus_frame: np.ndarray) -> None:
    """While the worker runs stream A's frame, B's frames 0, 1, 2 arrive: only 2 runs, and
    A's frames pushed meanwhile are replaced the same way — never queued."""
    _, registry = lanes
    (a, a_sink), (b, b_sink) = await open_streams(registry, 2)
    a.push(marked(bus_frame, 0, 0), None)
    assert await gated.entered() == [(0, 0)]  # A's frame 0 runs; the worker is busy
    for count in range(3):
        b.push(marked(bus_frame, 1, count), None)
    a.push(marked(bus_frame, 0, 1), None)
    a.push(marked(bus_frame, 0, 2), None)
    gated.release()
    assert await gated.entered() == [(1, 2)]  # B's turn: its newest, 0 and 1 were replaced
    b.push(marked(bus_frame, 1, 3), None)  # arrives while B's frame 2 runs
    gated.release()
    assert await gated.entered() == [(0, 2)]  # A's newest at this moment
    gated.release()
    assert await gated.entered() == [(1, 3)]
    gated.release()
    await wait_for(lambda: len(b_sink.detections()) == 2 and len(a_sink.detections()) == 2)
    first_b = b_sink.detections()[0]
    assert first_b["frame_id"] == 2 and first_b["frames"]["dropped"] == 2
    assert [m["frame_id"] for m in a_sink.detections()] == [0, 2]
    assert boxes(first_b["detections"]) == [d.to_dict() for d in gated.detections(640, 480)]


@pytest.mark.parametrize("lanes", [SchedulerConfig(max_batch=4)], indirect=True)
async def test_ready_streams_of_one_model_and_size_share_one_call(
        lanes: tuple[Scheduler, StreamRegistry], gated: StubDetector, bus_frame: np.ndarray) -> None:
    """Four streams ready at once run as one batch of four (the detector gets all four in one
    call, each its own result); a stream with another frame size is not mixed in."""
    _, registry = lanes
    streams = await open_streams(registry, 5)
    small = np.ascontiguousarray(bus_frame[::2, ::2])  # 320x240
    streams[0][0].push(marked(bus_frame, 0, 0), None)
    assert await gated.entered() == [(0, 0)]  # alone: nobody else was ready
    for i in (1, 2, 3):
        streams[i][0].push(marked(bus_frame, i, 0), None)
    streams[4][0].push(marked(small, 4, 0), None)
    streams[0][0].push(marked(bus_frame, 0, 1), None)
    gated.release()
    batch = await gated.entered()
    assert sorted(batch) == [(0, 1), (1, 0), (2, 0), (3, 0)], batch  # round-robin from stream 1, size 640x480
    gated.release()
    assert await gated.entered() == [(4, 0)]  # the 320x240 frame, in its own call
    gated.release()
    await wait_for(lambda: all(len(sink.detections()) >= 1 for _, sink in streams) and
                   len(streams[0][1].detections()) == 2)
    alone = streams[0][1].detections()[0]
    assert alone["timing"]["batch_size"] == 1
    for _, sink in streams[1:4]:
        (message,) = sink.detections()
        assert message["timing"]["batch_size"] == 4
        # Each image of the batch got its own result back: the same detections as alone.
        expected = [d.to_dict() for d in gated.detections(640, 480)]
        assert boxes(message["detections"]) == boxes(alone["detections"]) == expected
    small_result = streams[4][1].detections()[0]
    assert small_result["timing"]["batch_size"] == 1
    assert boxes(small_result["detections"]) == [d.to_dict() for d in gated.detections(320, 240)]
    assert 'rtc_batch_size_bucket{le="4.0"} 3.0' in registry.metrics.render().decode()


@pytest.mark.parametrize("lanes", [SchedulerConfig(max_batch=2, batch_wait_s=3.0)], indirect=True)
async def test_a_ready_frame_waits_for_a_batch_to_fill_at_most_batch_wait(
        lanes: tuple[Scheduler, StreamRegistry], gated: StubDetector, clock: TestClock,
        bus_frame: np.ndarray) -> None:
    """With a batch wait, a lone ready frame is held while another stream could join; the
    other's frame fills the batch and both go at once. Alone, it goes when the wait ends
    (on the scheduler's clock, which the test moves: nothing here waits 3 s).

    A push dispatches synchronously when it can (``Stream.push`` -> ``Scheduler.notify``),
    so "not dispatched" is read from the scheduler's own count right after it."""
    scheduler, registry = lanes
    (a, a_sink), (b, _) = await open_streams(registry, 2)
    a.push(marked(bus_frame, 0, 0), None)
    assert scheduler.load()["in_flight"] == 0  # held: B might have a frame any moment
    b.push(marked(bus_frame, 1, 0), None)
    assert scheduler.load()["in_flight"] == 1  # filled: dispatched at once
    assert sorted(await gated.entered()) == [(0, 0), (1, 0)]
    gated.release()
    await wait_for(lambda: len(a_sink.detections()) == 1)
    for count in range(1, 5):  # A's frames keep coming (as from a camera); B sends nothing
        a.push(marked(bus_frame, 0, count), None)
    clock.advance(2.5)
    scheduler.notify()
    assert scheduler.load()["in_flight"] == 0 and len(gated.held) == 1  # still within the wait
    clock.advance(0.6)  # 3.1 s since A's frame 1 arrived: the wait has run out
    scheduler.notify()
    assert scheduler.load()["in_flight"] == 1
    assert await gated.entered() == [(0, 4)]  # alone, the newest frame
    gated.release()
    assert a_sink.detections()[0]["timing"]["batch_size"] == 2


async def test_max_fps_holds_a_stream_back_and_the_others_get_its_share(
        lanes: tuple[Scheduler, StreamRegistry], gated: StubDetector, clock: TestClock,
        bus_frame: np.ndarray) -> None:
    """Stream A may have one detection per 10 s (of the scheduler's clock, which the test
    moves). While it waits, B is served every time even though A always has a frame; when
    B has nothing, A's frame runs once it is due — not before 1 / max_fps, and then at once."""
    scheduler, registry = lanes
    (a, a_sink), (b, b_sink) = await open_streams(registry, 2, a=0.1)
    a.push(marked(bus_frame, 0, 0), None)
    assert await gated.entered() == [(0, 0)]
    dispatched = []
    for count in range(4):
        a.push(marked(bus_frame, 0, count + 1), None)
        b.push(marked(bus_frame, 1, count), None)
        gated.release()
        dispatched += await gated.entered()
    assert [s for s, _ in dispatched] == [1, 1, 1, 1]  # A had a frame each time, but was not due
    gated.release()  # B has nothing new now: the next call is A's, when it is due
    await wait_for(lambda: len(b_sink.detections()) == 4)
    # Well under 1 s of real time has passed since A's dispatch (stub calls, no waits): 9 s
    # on the scheduler's clock is before A is due, 10.5 s after.
    clock.advance(9.0)
    scheduler.notify()
    assert scheduler.load()["in_flight"] == 0 and len(gated.held) == 5, gated.held
    clock.advance(1.5)
    scheduler.notify()
    assert scheduler.load()["in_flight"] == 1
    assert await gated.entered() == [(0, 4)]
    gated.release()
    await wait_for(lambda: len(a_sink.detections()) == 2)
    assert a_sink.detections()[1]["frames"]["dropped"] == 3


def test_worker_plan_shares_the_cores() -> None:
    assert plan_workers(0, 0, cores=2) == plan_workers(1, 0, cores=2)
    assert (plan_workers(0, 0, cores=2).workers, plan_workers(0, 0, cores=2).threads) == (1, 2)
    assert (plan_workers(0, 0, cores=16).workers, plan_workers(0, 0, cores=16).threads) == (4, 4)
    assert (plan_workers(2, 0, cores=2).workers, plan_workers(2, 0, cores=2).threads) == (2, 1)
    assert plan_workers(3, 5, cores=2).threads == 5  # as told
    assert plan_workers(0, 0, cores=8, accelerator=True).workers == 2


# ----- through the real app, with real aiortc peers ------------------------------------------------
def predict_sized(images: Sequence[np.ndarray]) -> bool:
    """The /predict fixture image (bus.jpg, 810x1080) rather than a 640x480 stream frame."""
    return any(i.shape[:2] == (1080, 810) for i in images)


async def post_image(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(f"{url}/predict", data=body, headers={"Content-Type": "image/jpeg"}) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_predict_beyond_its_queue_is_503_at_once_while_streams_go_on(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray) -> None:
    """Two workers, one live stream: /predict's fair share is one worker, so a held
    /predict call never takes the stream's. Two more requests wait (RTC_PREDICT_QUEUE=2);
    every request beyond is answered 503 ``overloaded`` with Retry-After at once — while
    the one in flight is still held — and the stream keeps getting detections."""
    gated = StubDetector(hold=predict_sized)
    app = stub_app(detector_override=gated, workers=2, predict_queue=2, predict_max_wait=60.0, rate_limit=0)
    url = await serve(aiohttp_server, app)
    body = (FIXTURES / "bus.jpg").read_bytes()
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client, aiohttp.ClientSession() as http:
        await client.next_message()
        admitted = [asyncio.create_task(post_image(http, url, body))]
        await gated.entered()  # the first /predict is on a worker, held
        admitted += [asyncio.create_task(post_image(http, url, body)) for _ in range(2)]
        await wait_for(lambda: app[INFERENCE].load()["predict_queue"] == 2)
        refused = await asyncio.gather(*(post_image(http, url, body) for _ in range(4)))
        for status, answer, headers in refused:
            assert status == 503 and answer["error"] == "overloaded", answer
            assert int(headers["Retry-After"]) >= 1
        assert not any(t.done() for t in admitted)  # those are still waiting, not refused
        # The stream goes on while /predict's share is held and its queue is full.
        before = (await client.next_message())["frame_id"]
        fresh = [await client.next_message() for _ in range(5)]
        assert all(m["frame_id"] > before for m in fresh)
        assert app[INFERENCE].load()["predict_queue"] == 2
        for _ in range(3):
            gated.release()
        answers = await asyncio.gather(*admitted)
        assert [status for status, _, _ in answers] == [200, 200, 200]
        expected = [d.to_dict() for d in gated.detections(810, 1080)]
        assert all(a["detections"] == expected for _, a, _ in answers), answers
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
    assert 'rtc_predict_requests_total{outcome="overloaded"} 4.0' in text
    assert 'rtc_predict_requests_total{outcome="ok"} 3.0' in text


@contextlib.asynccontextmanager
async def served_as_in_production(app: web.Application) -> AsyncIterator[str]:
    """``app`` behind an ``AppRunner`` as ``web.run_app`` makes it: handler cancellation
    off (aiohttp's default; the test server turns it on), so a request handler whose
    client hangs up is not cancelled and must notice by itself."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while (await http.get(f"{url}/readyz")).status != 200:
                await asyncio.sleep(0.05)
        yield url
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("cancellation", [False, True], ids=["as-run_app", "handler-cancellation"])
async def test_a_predict_whose_client_went_away_is_not_run(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], cancellation: bool) -> None:
    """A queued /predict whose client hangs up is dropped when its turn comes (checked on
    the request's transport), or leaves the queue when its handler is cancelled."""
    gated = StubDetector(hold=predict_sized)
    app = stub_app(detector_override=gated, predict_queue=4, predict_max_wait=60.0, rate_limit=0)
    body = (FIXTURES / "bus.jpg").read_bytes()
    async with contextlib.AsyncExitStack() as stack:
        if cancellation:
            url = await serve(aiohttp_server, app)
        else:
            url = await stack.enter_async_context(served_as_in_production(app))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        first = asyncio.create_task(post_image(http, url, body))
        await gated.entered()
        # A raw client sends a whole request, waits until it is queued, then hangs up.
        host, port = url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        await wait_for(lambda: app[INFERENCE].load()["predict_queue"] == 1)
        writer.close()
        await writer.wait_closed()
        if cancellation:  # the handler is cancelled: the request leaves the queue at once
            await wait_for(lambda: app[INFERENCE].load()["predict_queue"] == 0)
        else:  # it stays queued; the server's protocol sees the hang-up on this same loop
            await asyncio.sleep(0.2)
        last = asyncio.create_task(post_image(http, url, body))
        await wait_for(lambda: app[INFERENCE].load()["predict_queue"] == (1 if cancellation else 2))
        gated.release()
        await gated.entered()  # the next call run is the third request's: the second was skipped
        gated.release()
        assert (await first)[0] == 200 and (await last)[0] == 200
        assert len(gated.calls) == 2 and len(gated.held) == 2
        async with http.get(f"{url}/metrics") as response:
            assert 'rtc_predict_requests_total{outcome="abandoned"} 1.0' in await response.text()


def count_between(client: DetectionClient, start: float, end: float) -> int:
    return sum(1 for t in client.received_at.values() if start <= t <= end)


async def test_max_fps_from_the_offer_and_the_control_message(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray) -> None:
    """Peer A asks for one detection per 2 s in its offer; peer B asks for nothing and gets
    the spare; then B asks for 3/s with a control message. Counts over a window are bounded
    by the rates asked (the scheduler never dispatches a stream sooner than 1 / max_fps)."""
    url = await serve(aiohttp_server, stub_app())
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15), max_fps=0.5) as a, \
            DetectionClient(url, ImageTrack(bus_frame, fps=15)) as b:
        await a.next_message()
        await b.next_message()
        start = time.perf_counter()
        await asyncio.sleep(4.0)
        end = time.perf_counter()
        got_a, got_b = count_between(a, start, end), count_between(b, start, end)
        assert 1 <= got_a <= 0.5 * (end - start) + 1, got_a
        assert got_b > got_a, (got_a, got_b)  # B had A's spare share
        b.send({"type": "config", "max_fps": 3})
        ack = await b.next_message("config")
        assert ack["max_fps"] == 3
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        await asyncio.sleep(3.0)
        end = time.perf_counter()
        assert count_between(b, start, end) <= 3 * (end - start) + 2


async def test_readyz_shows_the_load_and_metrics_the_scheduler(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray) -> None:
    url = await serve(aiohttp_server, stub_app())
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client, aiohttp.ClientSession() as http:
        for _ in range(5):
            await client.next_message()
        async with http.get(f"{url}/readyz") as response:
            load = (await response.json())["load"]
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
    assert load["workers"] >= 1 and load["streams"] == 1 and 0.0 < load["busy"] <= 1.0, load
    assert load["predict_queue"] == 0 and load["predict_queue_max"] == 4
    assert f'rtc_stream_processed_per_second{{lane="{client.session_id}"}}' in text
    for name in ("rtc_scheduler_busy_ratio", "rtc_scheduler_workers", "rtc_batch_size_bucket",
                 "rtc_dispatch_wait_seconds_bucket", "rtc_scheduler_busy_seconds_total"):
        assert name in text, name


@pytest.mark.parametrize("value", [0, -1, 241, "5", True, [5]])
async def test_an_offer_with_a_bad_max_fps_is_a_400(aiohttp_server: ServerFactory,
                                                    stub_app: Callable[..., web.Application], value: object) -> None:
    url = await serve(aiohttp_server, stub_app())
    client = DetectionClient(url, ImageTrack(np.zeros((48, 64, 3), np.uint8)))
    try:
        await client.pc.setLocalDescription(await client.pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", json={
                "sdp": client.pc.localDescription.sdp, "type": "offer", "max_fps": value}) as response:
            body = await response.json()
        assert response.status == 400 and body["error"] == "bad_offer" and "max_fps" in body["detail"], body
    finally:
        await client.close()
