"""Hostile HTTP clients (issue 20, part B): limits that hold.

Forged proxy headers behind a real HAProxy, IPv6 clients rotating within their /64, one
client holding every session, a session-token holder flooding the control channel, junk
JPEG headers sent to ``/predict``, requests while the models load, ``RTC_PREDICT_QUEUE=0``.
Each test asserts the refusal *and* that the server stayed healthy meanwhile: its event
loop answered ``/healthz`` within 0.5 s all along (``tests/hostile_media.HealthProbe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from drivers.client import DetectionClient, ImageTrack
from rtc_server.engine.detector import Detector
from rtc_server.engine.images import MAX_JPEG_SEGMENTS, ChecksBusy, ImageChecks, ImageDecodeError, check_image
from rtc_server.ratelimit import client_key
from rtc_server.signaling.context import QUOTAS, REGISTRY
from rtc_server.signaling.proxies import client_of
from tests.helpers import ServerFactory, ServerProcess, cannot_run, free_port, serve, wait_for
from tests.hostile_media import HealthProbe
from tests.pull_media import make_clip
from tests.sdp import make_offer
from tests.stub_detector import StubDetector

FIXTURES = Path(__file__).parent / "fixtures"
MAX_LOOP_S = 0.5
JSON = {"Content-Type": "application/json"}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.asynccontextmanager
async def probing(url: str) -> AsyncIterator[HealthProbe]:
    """``HealthProbe`` around an in-process server: it is stopped from another thread, so the
    loop stays free to answer the probe's last request."""
    probe = HealthProbe(url, None)
    probe.__enter__()
    try:
        yield probe
    finally:
        await asyncio.to_thread(probe.__exit__, None, None, None)


def assert_healthy(probe: HealthProbe) -> None:
    assert probe.latencies, "the probe never ran"
    assert probe.failures == 0 and probe.worst < MAX_LOOP_S, (probe.failures, probe.worst)


# ----- 1. proxy headers: a real HAProxy in front ----------------------------------------------------
class HAProxy:
    """HAProxy 2.6 on 127.0.0.1 with ``option forwardfor`` (it appends the client's address to
    ``X-Forwarded-For`` and passes every other header through untouched), connecting to the
    server *from 127.0.0.2*: the one address the server trusts as its proxy."""

    def __init__(self, backend_port: int, folder: Path) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            cannot_run("haproxy is not installed (Debian package haproxy)")
        self.port = free_port()
        config = folder / "haproxy.cfg"
        config.write_text(f"""
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{self.port}
    option forwardfor
    default_backend app
backend app
    server app 127.0.0.1:{backend_port} source 127.0.0.2
""")
        self._process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self._process.poll() is not None:
                    raise RuntimeError(f"haproxy exited with {self._process.returncode}")
                await asyncio.sleep(0.1)
        raise TimeoutError("haproxy did not forward /healthz")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()


@pytest.fixture
def haproxy_factory(tmp_path: Path) -> Iterator[Callable[[int], HAProxy]]:
    started: list[HAProxy] = []

    def start(backend_port: int) -> HAProxy:
        proxy = HAProxy(backend_port, tmp_path)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


async def _offer_statuses(url: str, forged: list[dict[str, str]], local: str = "127.0.0.1") -> list[int]:
    """A bad offer per header set, in order: 400 on its merits, 429 once the bucket is empty."""
    connector = aiohttp.TCPConnector(local_addr=(local, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        statuses = []
        for headers in forged:
            async with http.post(url + "/offer", data="{}", headers={**JSON, **headers}) as response:
                statuses.append(response.status)
        return statuses


async def test_behind_haproxy_forged_headers_do_not_escape_the_rate_limit(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application],
        haproxy_factory: Callable[[int], HAProxy]) -> None:
    """Issue 20: 8 x 200 at 1/s, burst 2, because the client's own ``Forwarded`` beat the
    ``X-Forwarded-For`` HAProxy appended. Only that header counts now, walked from the right:
    the same 8 requests are 2 x 400 then 429, whatever they forge; another client address
    (127.0.0.3) behind the same proxy has its own bucket."""
    app = make_app(trusted_proxies=("127.0.0.2/32",), rate_limit=1.0, rate_burst=2)
    server = await aiohttp_server(app, host="127.0.0.1")
    proxy = haproxy_factory(server.port)
    await proxy.ready()
    forged = [{"Forwarded": f"for=198.51.100.{i}", "X-Forwarded-For": f"203.0.113.{i}",
               "X-Real-IP": f"192.0.2.{i}"} for i in range(8)]
    async with probing(str(server.make_url(""))) as probe:  # type: ignore[attr-defined]
        statuses = await _offer_statuses(proxy.url, forged)
        other = await _offer_statuses(proxy.url, forged[:1], local="127.0.0.3")
    assert statuses == [400, 400] + [429] * 6, statuses
    assert other == [400]
    assert_healthy(probe)


@pytest.mark.parametrize(("header", "headers", "expected"), [
    # X-Forwarded-For (the default): a client's own Forwarded is ignored, a prepended XFF hop too.
    ("X-Forwarded-For", {"Forwarded": "for=198.51.100.1", "X-Forwarded-For": "203.0.113.9, 192.0.2.7"},
     "192.0.2.7"),
    # Right-most untrusted hop, skipping every trusted proxy on the way.
    ("X-Forwarded-For", {"X-Forwarded-For": "203.0.113.9, 192.0.2.7, 10.1.1.1, 10.2.2.2"}, "192.0.2.7"),
    # Forwarded: the X-Forwarded-For a client sent is ignored.
    ("Forwarded", {"X-Forwarded-For": "198.51.100.1", "Forwarded": "for=203.0.113.9, for=192.0.2.7"}, "192.0.2.7"),
    ("Forwarded", {"X-Forwarded-For": "198.51.100.1"}, "10.0.0.5"),
])
def test_only_the_configured_header_is_believed(header: str, headers: dict[str, str], expected: str) -> None:
    request = make_mocked_request("GET", "/", headers=headers).clone(remote="10.0.0.5")
    resolved = client_of(request, (ipaddress.ip_network("10.0.0.0/8"),), header)
    assert resolved is not None and resolved[0] == expected


# ----- 2. IPv6 clients are keyed by their /64 --------------------------------------------------------
def test_client_keys() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("198.51.100.7") == "198.51.100.7" != client_key("198.51.100.8")
    assert client_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_key(None) == client_key("") == "unknown"


async def test_rotating_ipv6_addresses_within_a_64_shares_one_bucket(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]) -> None:
    """Behind a trusted proxy (127.0.0.1 here), each request from another address of one /64:
    one bucket (burst 2), so the third is 429; a client of another /64 is not affected."""
    url = await serve(aiohttp_server, make_app(trusted_proxies=("127.0.0.1/32",), rate_limit=0.01, rate_burst=2))
    rotating = [{"X-Forwarded-For": f"2001:db8:5:6:{i:x}::{i + 1:x}"} for i in range(6)]
    async with probing(url) as probe:
        statuses = await _offer_statuses(url, rotating)
        other = await _offer_statuses(url, [{"X-Forwarded-For": "2001:db8:5:7::1"}])
    assert statuses == [400, 400, 429, 429, 429, 429], statuses
    assert other == [400]
    assert_healthy(probe)


# ----- 3. per-client quotas on sessions and pulls --------------------------------------------------
async def _post_offer(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
                      ) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(url + "/offer", json={"sdp": await make_offer(), "type": "offer"},
                         headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def _post_whip(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with http.post(url + "/whip", data=await make_offer(channel=False),
                         headers={"Content-Type": "application/sdp"}) as response:
        return response.status, dict(response.headers)


async def test_one_client_cannot_hold_every_session(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]) -> None:
    """RTC_MAX_SESSIONS_PER_CLIENT=2: /offer and /whip count together; the third is 429
    ``session_quota`` with Retry-After while another client still gets its session. The slot
    comes back however a session ends: DELETE, or the peer never connecting (reaped)."""
    app = make_app(max_sessions_per_client=2, rate_limit=0, trusted_proxies=("127.0.0.1/32",),
                   connect_timeout=2.0)
    url = await serve(aiohttp_server, app)
    registry = app[REGISTRY]
    try:
        async with probing(url) as probe:
            async with aiohttp.ClientSession() as http:
                first = await _post_offer(http, url)
                whip_status, whip_headers = await _post_whip(http, url)
                assert first[0] == 200 and whip_status == 201, (first, whip_status)
                status, body, headers = await _post_offer(http, url)
                assert status == 429 and body["error"] == "session_quota", body
                assert "RTC_MAX_SESSIONS_PER_CLIENT=2" in body["detail"] and int(headers["Retry-After"]) >= 1
                whip_status, _ = await _post_whip(http, url)
                assert whip_status == 429
                # Another client (named by the trusted proxy) is not affected.
                other = await _post_offer(http, url, {"X-Forwarded-For": "198.51.100.20"})
                assert other[0] == 200, other[1]
                # Ended by DELETE: the slot is free at once.
                async with http.delete(url + whip_headers["Location"]) as response:
                    assert response.status == 200
                again = await _post_offer(http, url)
                assert again[0] == 200, again[1]
                assert (await _post_offer(http, url))[0] == 429
                # Never connected (nobody answers ICE): reaped after RTC_CONNECT_TIMEOUT, slot released.
                await wait_for(lambda: len(registry) == 0, timeout=15)
                assert app[QUOTAS].held("sessions", "127.0.0.1") == 0
                assert (await _post_offer(http, url))[0] == 200
        assert_healthy(probe)
    finally:
        await registry.close_all()


async def test_a_failed_offer_releases_its_quota_slot(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]) -> None:
    app = make_app(max_sessions_per_client=1, rate_limit=0)
    url = await serve(aiohttp_server, app)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(3):  # an offer aiortc cannot answer holds no slot afterwards
                async with http.post(url + "/offer", json={"sdp": "v=0\r\nbroken", "type": "offer"}) as response:
                    assert response.status == 400
            assert app[QUOTAS].held("sessions", "127.0.0.1") == 0
            assert (await _post_offer(http, url))[0] == 200
    finally:
        await app[REGISTRY].close_all()


async def test_one_client_cannot_hold_every_pull(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], tmp_path: Path) -> None:
    clip = tmp_path / "bus.ts"
    make_clip(clip, "mpegts", seconds=2.0)
    app = make_app(max_pulls_per_client=1, rate_limit=0, source_allow_file=True)
    url = await serve(aiohttp_server, app)
    stream = {"url": clip.as_uri(), "loop": True}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/streams", json=stream) as response:
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
            async with http.post(url + "/streams", json=stream) as response:
                body = await response.json()
                assert response.status == 429 and body["error"] == "pull_quota", body
                assert "RTC_MAX_PULLS_PER_CLIENT=1" in body["detail"] and response.headers["Retry-After"]
            async with http.delete(url + location) as response:
                assert response.status == 204
            async with http.post(url + "/streams", json=stream) as response:
                assert response.status == 201, await response.text()
    finally:
        await app[REGISTRY].close_all()


def test_quota_table_stays_bounded() -> None:
    from rtc_server.signaling.quotas import ClientQuotas, QuotaLimits

    live: set[str] = set()
    quotas = ClientQuotas(QuotaLimits(sessions=1, pulls=1), lambda stream_id: stream_id in live)
    for i in range(10_000):  # many clients, each a stream that ended
        with quotas.hold("sessions", f"198.51.{i // 250}.{i % 250}") as slot:
            slot.bind(f"s{i}")
    assert len(quotas) <= 128
    live.add("kept")
    with quotas.hold("pulls", "192.0.2.1") as slot:
        slot.bind("kept")
    with pytest.raises(Exception, match="RTC_MAX_PULLS_PER_CLIENT=1"), quotas.hold("pulls", "192.0.2.1"):
        pass
    live.discard("kept")
    with quotas.hold("pulls", "192.0.2.1"):
        pass


# ----- 4. a control-message bucket per sender ----------------------------------------------------------
async def test_a_websocket_flood_does_not_starve_the_owners_data_channel(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray) -> None:
    """A session-token holder floods the WebSocket with control messages: it is told
    ``rate_limited`` and dropped, while the owner's data channel is answered as before."""
    url = await serve(aiohttp_server, make_app(message_rate=5.0, rate_limit=0))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as owner, aiohttp.ClientSession() as http:
        await owner.next_message()
        ws = await http.ws_connect(f"{url}/sessions/{owner.session_id}/ws?token={owner.session_token}")
        async with probing(url) as probe:
            for i in range(200):
                await ws.send_str(json.dumps({"type": "ping", "t": i}))
            flooded = False
            while not flooded:
                message = json.loads((await ws.receive(timeout=10)).data)
                flooded = message.get("type") == "error" and message.get("error") == "rate_limited"
            for t in (1001, 1002, 1003):
                owner.send({"type": "ping", "t": t})
                pong = await owner.next_message("pong", timeout=5)
                assert pong["t"] == t
        await ws.close()
    assert_healthy(probe)


# ----- 5. nothing heavy on the loop from a client's bytes ------------------------------------------------
def _junk_jpegs() -> dict[str, bytes]:
    size = 16 * 2**20 - 64
    return {
        "fill": b"\xff\xd8" + b"\xff" * size,  # Pillow: ~35 s of Python per body
        "segments": b"\xff\xd8" + b"\xff\xe1\x00\x02" * (size // 4),
        "markers_and_junk": b"\xff\xd8" + b"\xff\x00junk" * (size // 6),
    }


def test_the_header_walk_is_bounded_and_reads_real_images() -> None:
    import io

    from PIL import Image

    bus = (FIXTURES / "bus.jpg").read_bytes()
    assert check_image(bus, 25_000_000) == (810, 1080)
    for kind, options in (("JPEG", {"progressive": True}), ("JPEG", {"exif": b"Exif\0\0" + bytes(60000)}),
                          ("PNG", {})):
        buffer = io.BytesIO()
        Image.new("RGB", (641, 479)).save(buffer, kind, **options)
        assert check_image(buffer.getvalue(), 25_000_000) == (641, 479), (kind, options)
    for name, junk in _junk_jpegs().items():
        started = time.perf_counter()
        with pytest.raises(ImageDecodeError):
            check_image(junk, 25_000_000)
        assert time.perf_counter() - started < 1.0, name  # Pillow: seconds to tens of seconds
    with pytest.raises(ImageDecodeError, match=f"more than {MAX_JPEG_SEGMENTS} segments"):
        check_image(b"\xff\xd8" + b"\xff\xfe\x00\x02" * (MAX_JPEG_SEGMENTS + 1) + bus[2:], 25_000_000)


async def test_image_checks_beyond_their_bound_are_refused_at_once() -> None:
    checks = ImageChecks(workers=1, max_in_flight=1, inline_bytes=1024)
    try:
        junk = _junk_jpegs()["fill"]
        first, second = await asyncio.gather(checks.check(junk, 25_000_000), checks.check(junk, 25_000_000),
                                             return_exceptions=True)
        assert isinstance(first, ImageDecodeError) and isinstance(second, ChecksBusy), (first, second)
        assert checks.in_flight == 0
        assert await checks.check((FIXTURES / "bus.jpg").read_bytes(), 25_000_000) == (810, 1080)
    finally:
        checks.close()


@pytest.fixture(scope="module")
def server(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("issue-20-http") / "server.log"
    process = ServerProcess(log, {"RTC_MODEL": str(model_file), "RTC_RATE_LIMIT": "0",
                                  "RTC_PREDICT_RATE_LIMIT": "0", "RTC_LOG_LEVEL": "WARNING"})
    process.start()
    yield process
    process.stop()


def _post(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + "/predict", data=body, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_parallel_junk_jpegs_do_not_stall_the_loop(server: ServerProcess) -> None:
    """Issue 20: one 16 MiB body of JPEG markers and junk blocked ``/healthz`` for 0.7 s, and
    parallel ones multiplied it (16 MiB of 0xFF: 35 s of Pillow on the loop). Now 6 at once:
    each refused (400 ``bad_image``, or 503 ``overloaded`` when every check slot is taken),
    ``/healthz`` under 0.5 s throughout, and a real image still detected afterwards."""
    bodies = [body for body in _junk_jpegs().values() for _ in range(2)]
    results: list[tuple[int, dict[str, Any]]] = []
    with HealthProbe(server.url, server.proc.pid if server.proc else None) as probe:
        threads = [threading.Thread(target=lambda b=body: results.append(_post(server.url, b))) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert len(results) == len(bodies)
    for status, body in results:
        assert (status, body["error"]) in ((400, "bad_image"), (503, "overloaded")), (status, body)
    assert any(status == 400 for status, _ in results)
    assert_healthy(probe)
    assert probe.rss_growth < 512 * 2**20  # six 16 MiB bodies in flight, nothing decoded
    status, answer = _post(server.url, (FIXTURES / "bus.jpg").read_bytes())
    assert status == 200 and {"bus", "person"} <= {d["label"] for d in answer["detections"]}


# ----- 6. not ready: 503 with Retry-After everywhere -------------------------------------------------------
async def test_not_ready_503s_say_when_to_retry(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], detector: Detector) -> None:
    release = threading.Event()

    class SlowWarmup:
        info = detector.info

        def detect(self, images, thresholds):  # type: ignore[no-untyped-def]
            return detector.detect(images, thresholds)

        def warmup(self) -> None:
            release.wait(30)

    server = await aiohttp_server(make_app(detector_override=SlowWarmup(), rate_limit=0), host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    offer = await make_offer()
    try:
        async with aiohttp.ClientSession() as http:
            requests = [
                http.post(url + "/offer", json={"sdp": offer, "type": "offer"}),
                http.post(url + "/whip", data=offer, headers={"Content-Type": "application/sdp"}),
                http.post(url + "/streams", json={"url": "rtsp://198.51.100.1/cam"}),
                http.post(url + "/predict", data=(FIXTURES / "bus.jpg").read_bytes(),
                          headers={"Content-Type": "image/jpeg"}),
            ]
            for request in requests:
                async with request as response:
                    body = await response.json()
                    assert response.status == 503 and body["error"] == "not_ready", (response.url, body)
                    assert int(response.headers["Retry-After"]) >= 1, response.url
    finally:
        release.set()


# ----- 7. RTC_PREDICT_QUEUE=0: no waiting line, not "always refused" ----------------------------------------
async def test_predict_queue_zero_runs_when_a_worker_is_free(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]) -> None:
    """0 means none waits: a request runs if a worker is free for it now (issue 20: every
    request got 503), and one that finds the worker busy is 503 ``overloaded`` at once."""
    gated = StubDetector(hold=lambda images: images[0].shape[1] == 810)  # bus.jpg's calls only
    app = make_app(detector_override=gated, workers=1, predict_queue=0, rate_limit=0, predict_rate_limit=0)
    url = await serve(aiohttp_server, app)
    body = (FIXTURES / "bus.jpg").read_bytes()
    jpeg = {"Content-Type": "image/jpeg"}
    async with aiohttp.ClientSession() as http:
        async def post() -> tuple[int, dict[str, Any], dict[str, str]]:
            async with http.post(url + "/predict", data=body, headers=jpeg) as response:
                return response.status, await response.json(), dict(response.headers)

        held = asyncio.create_task(post())
        await gated.entered()
        started = time.monotonic()
        status, answer, headers = await post()
        assert status == 503 and answer["error"] == "overloaded" and int(headers["Retry-After"]) >= 1, answer
        assert time.monotonic() - started < 1.0  # at once, not after RTC_PREDICT_MAX_WAIT
        gated.release()
        status, answer, _ = await held
        assert status == 200 and "bus" in {d["label"] for d in answer["detections"]}
        gated.release()  # the next call is let through at once
        for _ in range(2):
            gated.release()
            status, answer, _ = await post()
            assert status == 200, answer


# ----- the settings --------------------------------------------------------------------------------
def test_the_new_settings_are_checked() -> None:
    from rtc_server.config import ConfigError, Settings, load_settings
    from rtc_server.wiring import quota_limits

    defaults = Settings()
    assert (defaults.proxy_header, defaults.max_sessions_per_client, defaults.max_pulls_per_client) == (
        "X-Forwarded-For", 4, 4)
    settings = load_settings(["--proxy-header", "forwarded"], {"RTC_MAX_SESSIONS_PER_CLIENT": "0",
                                                              "RTC_MAX_PULLS_PER_CLIENT": "2"})
    assert settings.proxy_header == "Forwarded"
    assert (quota_limits(settings).sessions, quota_limits(settings).pulls) == (0, 2)
    with pytest.raises(ConfigError, match="proxy_header 'X-Real-IP' is not one of X-Forwarded-For, Forwarded"):
        load_settings([], {"RTC_PROXY_HEADER": "X-Real-IP"})
    for name in ("RTC_MAX_SESSIONS_PER_CLIENT", "RTC_MAX_PULLS_PER_CLIENT"):
        with pytest.raises(ConfigError, match="must be >= 0"):
            load_settings([], {name: "-1"})
