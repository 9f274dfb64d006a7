"""Issue 20, WebRTC/WHIP senders and the lifecycle: hostile clients against real servers.

Each test asserts the refusal (or the fix) *and* that the server stayed healthy meanwhile:
``/healthz`` answers, the session slot is free again, nothing is left bound. Real things
throughout: aiortc peers over loopback, a real aiohttp server, real UDP sockets.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp
import aioice.ice
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.addresses import AddressPolicy
from rtc_server.app import build_registry, create_app
from rtc_server.config import ConfigError, Settings, load_settings
from rtc_server.engine.catalog import ModelCatalog
from rtc_server.engine.detector import DetectionResult, Detector
from rtc_server.engine.scheduler import Scheduler
from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import REGISTRY
from rtc_server.streams.registry import StreamRegistry, freeze_long_lived
from rtc_server.streams.stream import StreamLimits
from rtc_server.webrtc.candidates import RemoteCandidates, TooManyCandidates
from rtc_server.webrtc.ice import use_host_addresses
from rtc_server.webrtc.portrange import bind_in_range, use_udp_ports

from .helpers import ListSink, ServerFactory, free_udp_range, open_udp_sockets, serve
from .sdp import make_offer

SDPFRAG = "application/trickle-ice-sdpfrag"


async def healthy(url: str, within: float = 0.5) -> None:
    """``/healthz`` answers 200 within ``within`` s: the event loop is free."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        assert response.status == 200
    assert time.perf_counter() - started < within


def candidate(address: str, port: int, foundation: int = 1) -> str:
    return f"a=candidate:{foundation} 1 udp 2122260223 {address} {port} typ host"


def with_candidates(sdp: str, lines: list[str], end: bool = False) -> str:
    """``sdp`` with ``lines`` (and ``a=end-of-candidates``) added to its first media section."""
    out, done = [], False
    for line in sdp.splitlines():
        out.append(line)
        if line.startswith("a=mid:") and not done:
            out += lines + (["a=end-of-candidates"] if end else [])
            done = True
    return "\r\n".join(out) + "\r\n"


# ----- 1. a frame-size cap for every source --------------------------------------------------------
async def test_a_webrtc_frame_over_the_cap_ends_the_stream_naming_size_and_cap(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray,
) -> None:
    """A real aiortc peer sends 640x480 to a server capped at 320x240: the stream ends with
    a ``frame_too_large`` message naming both, before any detection (no RGB conversion),
    and no snapshot is kept. Failed before: the frame was detected in (a detections message)."""
    cap = 320 * 240
    app = make_app(max_frame_pixels=cap)
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        stream = app[REGISTRY].get(client.session_id or "")
        assert stream is not None
        error = await client.next_message("error", timeout=15)
        assert error["error"] == "frame_too_large"
        assert "640x480" in error["detail"] and str(cap) in error["detail"], error
        assert "RTC_MAX_FRAME_PIXELS" in error["detail"]
        async with asyncio.timeout(10):
            while len(app[REGISTRY]):
                await asyncio.sleep(0.02)
        assert stream.close_reason == "frame too large" and stream.processed == 0
        assert stream.latest_frame is None and stream.counts.received == 0
        await healthy(url)
    finally:
        await client.close()


async def test_a_webrtc_frame_under_the_cap_is_detected(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray,
) -> None:
    app = make_app(max_frame_pixels=640 * 480)  # exactly at the cap: fits
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        message = await client.next_message("detections")
        assert {"bus", "person"} <= {d["label"] for d in message["detections"]}
        assert len(app[REGISTRY]) == 1
    finally:
        await client.close()


# ----- 2. ICE: forbidden ranges dropped, candidates capped ------------------------------------------
#: A public name makes the test server one that strangers reach (not loopback-only), where
#: the candidate rules apply; requests still go to 127.0.0.1, a loopback name it always serves.
PUBLIC_NAME = "rtc.example"


async def test_a_loopback_only_server_keeps_its_own_machines_candidates(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray,
) -> None:
    """``make run``'s case: a server on 127.0.0.1 with no RTC_ICE_ALLOW_NETWORKS, and a client
    on the same machine whose only candidates are loopback ones. Strangers cannot reach such
    a server, so its clients' local candidates are kept (failed before: 400, every candidate
    dropped as loopback)."""
    app = make_app(ice_allow_networks=())
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        message = await client.next_message("detections")
        assert {"bus", "person"} <= {d["label"] for d in message["detections"]}
    finally:
        await client.close()

def test_remote_candidates_follow_the_pull_sources_address_rule() -> None:
    guard = RemoteCandidates(AddressPolicy.of(["127.0.0.1/32"]), ["127.0.0.1"])
    assert guard.why_dropped("candidate:1 1 udp 1 127.0.0.1 5000 typ host") is None
    for address, kind in [("127.0.0.5", "loopback"), ("::ffff:127.0.0.9", "loopback")]:
        assert kind in (guard.why_dropped(f"candidate:1 1 udp 1 {address} 5000 typ host") or ""), address
    public = RemoteCandidates(AddressPolicy(), ["203.0.113.9"])
    assert public.why_dropped("candidate:1 1 udp 1 8.8.8.8 3478 typ srflx raddr 0.0.0.0 rport 0") is None
    refused = {"169.254.169.254": "link-local", "10.1.2.3": "private", "192.168.1.1": "private",
               "fe80::1": "link-local", "224.0.0.251": "multicast", "127.0.0.1": "loopback",
               "::ffff:169.254.169.254": "link-local", "0.0.0.0": "unspecified", "fd00::1": "private"}
    for address, kind in refused.items():
        why = public.why_dropped(f"candidate:1 1 udp 1 {address} 5000 typ host")
        assert why is not None and kind in why and "RTC_ICE_ALLOW_NETWORKS" in why, (address, why)
    assert "mDNS" in (public.why_dropped("candidate:1 1 udp 1 0b1f2a.local 5000 typ host") or "")
    capped = RemoteCandidates(AddressPolicy(), [], max_candidates=3)
    capped.admit(2)
    with pytest.raises(TooManyCandidates, match="at most 3"):
        capped.admit(2)
    capped.admit(1)  # a refused batch counted nothing
    assert capped.received == 3


def test_ice_settings_parse_and_are_checked() -> None:
    settings = load_settings([], {"RTC_ICE_ALLOW_NETWORKS": "192.168.0.0/16, 127.0.0.0/8",
                                  "RTC_MAX_REMOTE_CANDIDATES": "8"})
    assert settings.ice_allow_networks == ("192.168.0.0/16", "127.0.0.0/8")
    assert settings.max_remote_candidates == 8 and Settings().max_remote_candidates == 32
    assert Settings().ice_allow_networks == ()
    with pytest.raises(ConfigError, match="ice_allow_networks"):
        Settings(ice_allow_networks=("not-a-network",))
    with pytest.raises(ConfigError, match="max_remote_candidates"):
        Settings(max_remote_candidates=0)


class UdpListener:
    """A UDP socket on a loopback address: who would receive the server's STUN checks."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()

    def received(self) -> int:
        count = 0
        while True:
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def victim() -> AsyncIterator[UdpListener]:
    listener = UdpListener("127.0.0.5")  # loopback, but not in the server's allowed 127.0.0.1/32
    yield listener
    listener.close()


async def test_offered_candidates_to_forbidden_addresses_get_no_stun_check(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], victim: UdpListener,
) -> None:
    """The server allows 127.0.0.1/32 only; an offer names 127.0.0.5 (a stand-in for the
    metadata service or a private host: loopback is what a test can listen on) and the
    metadata address. Failed before: the victim received STUN binding requests."""
    app = make_app(ice_allow_networks=("127.0.0.1/32",), public_hosts=(PUBLIC_NAME,))
    url = await serve(aiohttp_server, app)
    reachable = UdpListener("127.0.0.1")  # an allowed candidate does get checks: the test can fail
    sdp = with_candidates(await make_offer(), [candidate(*victim.address), candidate("169.254.169.254", 80, 2),
                                               candidate(*reachable.address, foundation=3)])
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"})
            assert response.status == 200, await response.text()
        await asyncio.sleep(2.0)  # aioice checks every 20-50 ms; retransmits for seconds
        assert victim.received() == 0
        assert reachable.received() > 0
        await healthy(url)
    finally:
        reachable.close()
        await app[REGISTRY].close_all()


async def test_trickled_candidates_to_forbidden_addresses_get_no_stun_check_and_are_capped(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], victim: UdpListener,
) -> None:
    """WHIP PATCH: the same rule and one cap counted across the offer and every fragment."""
    app = make_app(ice_allow_networks=("127.0.0.1/32",), max_remote_candidates=4, public_hosts=(PUBLIC_NAME,))
    url = await serve(aiohttp_server, app)
    offer = with_candidates(await make_offer(), [candidate("127.0.0.1", 9, 7)])  # 1 of 4
    async with aiohttp.ClientSession() as http:
        created = await http.post(f"{url}/whip", data=offer, headers={"Content-Type": "application/sdp"})
        assert created.status == 201, await created.text()
        location = url + created.headers["Location"] if created.headers["Location"].startswith("/") \
            else created.headers["Location"]
        headers = {"Content-Type": SDPFRAG, "If-Match": created.headers["ETag"]}
        fragment = "a=mid:0\r\n" + candidate(*victim.address) + "\r\n" + candidate("10.0.0.1", 5000, 2) + "\r\n"
        patched = await http.patch(location, data=fragment, headers=headers)
        assert patched.status == 204, await patched.text()  # dropped silently (RFC 9725), counted: 3 of 4
        await asyncio.sleep(2.0)
        assert victim.received() == 0
        over = "a=mid:0\r\n" + candidate("127.0.0.1", 10, 3) + "\r\n" + candidate("127.0.0.1", 11, 4) + "\r\n"
        refused = await http.patch(location, data=over, headers=headers)
        assert refused.status == 400
        body = await refused.json()
        assert body["error"] == "too_many_candidates" and "at most 4" in body["detail"]
        assert len(app[REGISTRY]) == 1  # the session lives on
        last = await http.patch(location, data="a=mid:0\r\n" + candidate("127.0.0.1", 12, 5) + "\r\n",
                                headers=headers)
        assert last.status == 204  # 4 of 4
    await healthy(url)
    await app[REGISTRY].close_all()


async def test_an_offer_over_the_candidate_cap_is_400_and_holds_no_slot(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application],
) -> None:
    app = make_app(max_remote_candidates=32)
    url = await serve(aiohttp_server, app)
    lines = [candidate("127.0.0.1", 20000 + i, i) for i in range(33)]
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{url}/offer", json={"sdp": with_candidates(await make_offer(), lines),
                                                         "type": "offer"})
        body = await response.json()
    assert response.status == 400 and body["error"] == "too_many_candidates", body
    assert "33" in body["detail"] and "at most 32" in body["detail"]
    assert len(app[REGISTRY]) == 0
    await healthy(url)


# ----- 7. end-of-candidates and no candidate: 400, not "no UDP port is free" ------------------------
@pytest.mark.parametrize("candidates", [[], ["a=candidate:1 1 udp 2122260223 10.9.8.7 5000 typ host"]])
async def test_an_offer_with_end_of_candidates_and_none_usable_is_400(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], candidates: list[str],
) -> None:
    """Failed before: 503 no_candidates "no UDP port or relay is free" (the wrong reason)."""
    app = make_app(public_hosts=(PUBLIC_NAME,))
    url = await serve(aiohttp_server, app)
    sdp = with_candidates(await make_offer(), candidates, end=True)
    async with aiohttp.ClientSession() as http:
        offer = await http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"})
        whip = await http.post(f"{url}/whip", data=sdp, headers={"Content-Type": "application/sdp"})
        bodies = [await offer.json(), await whip.json()]
    for response, body in zip((offer, whip), bodies, strict=True):
        assert response.status == 400, body
        assert body["error"] == "bad_offer" and "end-of-candidates" in body["detail"]
        assert "no ICE candidate" in body["detail"] and "Retry-After" not in response.headers
    assert len(app[REGISTRY]) == 0
    await healthy(url)


# ----- 3. Stream's close path runs every step whatever raises ---------------------------------------
class RaisingSink(ListSink):
    def close(self) -> None:
        super().close()
        raise RuntimeError("sink close failed")


class RaisingSource:
    kind = "offer"

    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True
        raise OSError("transport close failed")


@pytest.fixture
async def registry(detector: Detector, model_file: Path) -> AsyncIterator[StreamRegistry]:
    scheduler = Scheduler(ModelCatalog.of(detector))
    yield build_registry(Settings(model=model_file, max_sessions=1), scheduler)
    await scheduler.aclose()


async def test_a_raising_sink_close_still_frees_the_slot_and_closes_every_sink(registry: StreamRegistry) -> None:
    """Failed before: ``close`` raised out of the first sink's ``close``; the other sink was
    never closed and the registry kept the stream (its slot leaked: ``ServerFull``)."""
    stream = registry.open("offer")
    source = RaisingSource()
    stream.attach(source)
    first, second = RaisingSink(), ListSink()
    stream.add_sink(first)
    stream.add_sink(second)
    stream.start()
    async with asyncio.timeout(5):
        await stream.close("closed by test")
    assert source.stopped and first.closed and second.closed
    assert len(registry) == 0
    registry.open("offer")  # the one slot is free again
    text = registry.metrics.render().decode()
    assert 'rtc_errors_total{kind="session_close_failed"} 2.0' in text  # the source and the sink
    assert 'rtc_sessions_closed_total{reason="closed_by_test"} 1.0' in text
    await registry.close_all()


# ----- 4. the UDP port range closes the socket when the endpoint set-up raises ----------------------
async def test_a_failing_endpoint_setup_leaves_no_bound_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed before: the socket bound in the range stayed open (the port taken for good)."""
    low, high = free_udp_range(1)
    use_host_addresses(["127.0.0.1"])
    use_udp_ports((low, high))
    loop = asyncio.get_running_loop()
    before = open_udp_sockets()

    async def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("endpoint set-up failed")

    monkeypatch.setattr(loop, "create_datagram_endpoint", refuse)
    connection = aioice.ice.Connection(ice_controlling=False)
    candidates = await connection.get_component_candidates(component=1, addresses=["127.0.0.1"])
    monkeypatch.undo()
    assert candidates == []
    assert open_udp_sockets() == before
    bind_in_range("127.0.0.1", (low, high)).close()  # the one port is free again

    async def cancelled(*args: object, **kwargs: object) -> None:
        raise asyncio.CancelledError()

    monkeypatch.setattr(loop, "create_datagram_endpoint", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await connection.get_component_candidates(component=1, addresses=["127.0.0.1"])
    monkeypatch.undo()
    assert open_udp_sockets() == before
    await connection.close()


# ----- 5. garbage collection after churn walks only what was made since start-up --------------------
def test_freezing_at_start_up_makes_the_churn_collection_cheap() -> None:
    """The registry's full collection after streams close walked every object of the
    process (50-65 ms with the model and aiortc loaded: a loop stall per second of churn).
    After ``freeze_long_lived`` (called by the root at start-up) it walks only newer ones."""
    live = [[{"i": i}] for i in range(200_000)]  # long-lived objects, as a loaded server has

    def full_pass() -> float:
        started = time.perf_counter()
        gc.collect()
        return time.perf_counter() - started

    try:
        before = min(full_pass() for _ in range(3))
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(live)
        after = min(full_pass() for _ in range(3))
    finally:
        gc.unfreeze()
    assert after < before / 4, (before, after)


async def test_the_server_freezes_long_lived_objects_at_start_up(
    aiohttp_server: ServerFactory, settings: Settings, detector: Detector,
) -> None:
    """As ``python -m rtc_server`` builds it (``create_app``'s default); the suite's fixtures
    build theirs with ``freeze_gc=False``, which leaves the generations alone."""
    gc.unfreeze()
    await serve(aiohttp_server, create_app(settings, detector, freeze_gc=False))
    assert gc.get_freeze_count() == 0
    await serve(aiohttp_server, create_app(settings, detector))
    assert gc.get_freeze_count() > 0


# ----- 6. Scheduler.close does not block the event loop --------------------------------------------
class SlowDetector:
    """Wraps a detector; every call takes ``seconds`` longer (a slow model, a big batch)."""

    def __init__(self, inner: Detector, seconds: float) -> None:
        self._inner, self._seconds = inner, seconds
        self.info = inner.info

    def detect(self, images: Sequence[np.ndarray], thresholds: Sequence[Thresholds]) -> list[DetectionResult]:
        time.sleep(self._seconds)
        return self._inner.detect(images, thresholds)

    def warmup(self) -> None:
        self._inner.warmup()


async def test_closing_the_scheduler_with_a_call_in_flight_does_not_block_the_loop(
    detector: Detector, bus_frame: np.ndarray,
) -> None:
    """Failed before (``close`` with ``shutdown(wait=True)`` on the loop): the loop stalled
    for the whole in-flight call (~1.5 s)."""
    scheduler = Scheduler(ModelCatalog.of(SlowDetector(detector, 1.5)))  # type: ignore[arg-type]
    predict = asyncio.ensure_future(scheduler.detect(bus_frame, Thresholds()))
    await asyncio.sleep(0.3)  # the call is in flight
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    assert await scheduler.aclose(timeout=10) is True
    waited = time.perf_counter() - started
    ticking.cancel()
    await asyncio.gather(ticking, predict, return_exceptions=True)
    assert waited > 0.5  # it did wait for the call in flight...
    assert max(gaps) < 0.3, max(gaps)  # ...while the loop went on


async def test_a_pulled_frame_over_the_cap_ends_the_stream_from_its_thread(registry: StreamRegistry) -> None:
    """The same one check for a source with a thread of its own (``push_threadsafe``): the
    oversized frame is not kept, and the stream ends on the loop with the same message."""
    stream = registry.open("pull")
    stream.limits = StreamLimits(max_frame_pixels=100 * 100)
    sink = ListSink()
    stream.add_sink(sink)
    stream.start()
    loop = asyncio.get_running_loop()
    pushed = await asyncio.to_thread(stream.push_threadsafe, np.zeros((120, 100, 3), np.uint8), 0, loop)
    assert pushed
    async with asyncio.timeout(5):
        while len(registry):
            await asyncio.sleep(0.01)
    assert stream.close_reason == "frame too large" and stream.counts.received == 0
    (error,) = [m for m in sink.messages if m.get("type") == "error"]
    assert error["error"] == "frame_too_large" and "100x120" in error["detail"] and "10000" in error["detail"]
