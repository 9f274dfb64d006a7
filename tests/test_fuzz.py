"""Property-based fuzzing of every input surface (hypothesis, bounded: 200 examples each).

The REST surface is driven over real HTTP against one real server (its own event loop in a
thread, so hypothesis' synchronous examples can call it); the data-channel surface is the
pure ``parse_control`` function every control message goes through. The properties: no
input ever gets a 5xx or a non-JSON error, nothing leaks (no session is left by a rejected
offer), no file outside ``static/`` is ever served, and the server still answers after.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import INFERENCE, REGISTRY
from rtc_server.streams.control import Config, ControlError, Ping, Report, StreamSettings, parse_control

from .sdp import make_offer
from .stub_detector import StubDetector

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
README = Path(__file__).resolve().parent.parent / "README.md"


class ThreadedServer:
    """A real aiohttp server on 127.0.0.1 with its own loop in a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner = web.AppRunner(app)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(60), "the fuzz server did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        while not self.app[INFERENCE].ready:
            await asyncio.sleep(0.05)

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the server's loop (to read server state consistently)."""
        async def run() -> object:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def session_ids(self) -> set[str]:
        """The live sessions, read on the server's own loop."""
        ids = self.call(lambda: {stream.id for stream in self.app[REGISTRY]})
        assert isinstance(ids, set)
        return ids

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    """The app on the stub detector: fuzzing is about what the HTTP face survives, not detections."""
    from rtc_server.app import create_app
    from rtc_server.config import Settings

    settings_ = Settings(model=Path("yolo11n.onnx"), ice_addresses=("127.0.0.1",), ice_allow_networks=("127.0.0.0/8",),
                         rate_limit=0, predict_rate_limit=0, max_sessions=0, connect_timeout=2.0,
                         data_dir=tmp_path_factory.mktemp("data"))
    s = ThreadedServer(create_app(settings_, StubDetector()))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def real_offer() -> str:
    return asyncio.run(make_offer())


def assert_clean_answer(status: int, headers: dict[str, str], body: bytes, allowed_ok: bool = True,
                        head: bool = False) -> None:
    assert status < 500, (status, body[:300])
    if status >= 400:
        assert headers["content-type"].startswith("application/json"), headers
        if head:  # HEAD answers carry the headers only
            return
        payload = json.loads(body)
        assert set(payload) == {"error", "detail"}, payload
    else:
        assert allowed_ok, (status, body[:300])


CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "image/jpeg", "image/png", "", "multipart/form-data; boundary=x",
                                 "application/x-www-form-urlencoded"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def mutate_lines(sdp: str, data: st.DataObject) -> str:
    """Delete, duplicate or corrupt a few lines of a real offer."""
    lines = sdp.split("\r\n")
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        action = data.draw(st.sampled_from(["drop", "dup", "garble", "truncate"]), label="action")
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "garble":
            lines[i] = data.draw(st.text(max_size=40), label="garbage")
        else:
            lines[i] = lines[i][: data.draw(st.integers(0, max(0, len(lines[i]) - 1)), label="cut")]
        if not lines:
            break
    return "\r\n".join(lines)


@FUZZ
@given(data=st.data())
def test_fuzz_offer(server: ThreadedServer, real_offer: str, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["bytes", "json", "sdp", "bundle"]), label="kind")
    if kind == "bytes":
        body = data.draw(st.binary(max_size=3000), label="body")
    elif kind == "json":
        body = json.dumps(data.draw(JSON_VALUES | st.dictionaries(
            st.sampled_from(["sdp", "type", "session_id", "model", "x"]), JSON_VALUES), label="json")).encode()
    elif kind == "sdp":
        offer = {"sdp": mutate_lines(real_offer, data), "type": "offer"}
        body = json.dumps(offer).encode()
    else:  # a valid SDP whose BUNDLE group aiortc only trips over after a session was opened
        mids = data.draw(st.lists(st.sampled_from(["0", "1", "2", "7", "x"]), max_size=4), label="mids")
        sdp = real_offer.replace("a=group:BUNDLE 0 1", " ".join(["a=group:BUNDLE", *mids]))
        body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
    content_type = data.draw(CONTENT_TYPES, label="content_type")
    before = server.session_ids()
    status, headers, answer = server.request("POST", "/offer", body, {"Content-Type": content_type})
    assert_clean_answer(status, headers, answer)
    if status == 200:  # a mutation that is still a usable offer: a session that will be reaped
        assert json.loads(answer)["type"] == "answer"
    else:
        # Checked right after the answer, not after the reaper has had its time: a rejected
        # offer must not have left a session behind (sessions of earlier usable offers may end
        # meanwhile, so: nothing new).
        assert server.session_ids() <= before, "a rejected offer left a session"


@FUZZ
@given(body=st.one_of(st.binary(max_size=4000), st.data()), content_type=CONTENT_TYPES)
def test_fuzz_predict(server: ThreadedServer, body: bytes | st.DataObject, content_type: str) -> None:
    if not isinstance(body, bytes):  # a real small JPEG with a few bytes flipped or cut short
        _, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))
        raw = bytearray(jpeg.tobytes())
        for _ in range(body.draw(st.integers(0, 6), label="flips")):
            raw[body.draw(st.integers(0, len(raw) - 1), label="at")] = body.draw(st.integers(0, 255), label="to")
        body = bytes(raw[: body.draw(st.integers(0, len(raw)), label="cut")])
    status, headers, answer = server.request("POST", "/predict", body, {"Content-Type": content_type})
    assert_clean_answer(status, headers, answer)
    if status == 200:
        assert json.loads(answer)["type"] == "detections"


PATH_PIECES = st.lists(st.sampled_from(["..", ".", "%2e%2e", "%2E%2e", "%2f", "%5c", "\\", "~", "", "static",
                                        "README.md", "app.js", "etc", "passwd", "%00", "....", "%252e%252e"]),
                       max_size=6)


@FUZZ
@given(pieces=PATH_PIECES, method=st.sampled_from(["GET", "HEAD", "POST", "DELETE", "OPTIONS"]),
       prefix=st.sampled_from(["/static/", "/", "/static", "//static/"]))
def test_fuzz_paths(server: ThreadedServer, pieces: list[str], method: str, prefix: str) -> None:
    path = prefix + "/".join(quote(p, safe="%.~\\") for p in pieces)
    status, headers, body = server.request(method, path)
    assert_clean_answer(status, headers, body, head=method == "HEAD")
    assert README.read_bytes()[:200] not in body


def test_fuzzing_left_no_sessions_and_the_server_works(server: ThreadedServer) -> None:
    """Runs after the fuzz tests in this module: every session a *usable* fuzzed offer created
    is reaped (rejected offers are checked one by one in ``test_fuzz_offer``)."""
    import time

    deadline = time.monotonic() + 30
    while server.call(lambda: len(server.app[REGISTRY])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.call(lambda: len(server.app[REGISTRY])) == 0
    assert server.request("GET", "/healthz")[0] == 200


#: Zones, lines and webhooks (issue 21): lists of objects with the fields they take, any values.
_POINT = st.lists(st.floats(allow_nan=True) | st.integers(-2, 2), max_size=3)
SHAPES = st.lists(st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=5) | st.integers(), "polygon": st.lists(_POINT, max_size=6), "a": _POINT, "b": _POINT,
    "classes": st.lists(st.sampled_from(["person", "car", "cat", 0, 1, 99, True]), max_size=3) | st.none(),
    "url": st.sampled_from(["http://a.example/x", "https://[::1", "ftp://x", "http://h:99999/", ""]),
    "secret": st.text(max_size=3) | st.integers()}), max_size=4)


@FUZZ
@given(raw=st.one_of(st.text(max_size=300), st.binary(max_size=100),
                     JSON_VALUES.map(json.dumps),
                     st.dictionaries(st.sampled_from(["type", "conf", "iou", "classes", "model", "max_fps", "t", "x",
                                                      "e2e_ms", "tracking", "zones", "lines", "webhooks"]),
                                     JSON_VALUES | st.sampled_from(["config", "ping", "report"]) | SHAPES,
                                     max_size=5).map(json.dumps)))
def test_fuzz_control_messages(raw: str | bytes) -> None:
    current = StreamSettings(Thresholds(conf=0.25, iou=0.7, max_det=300))
    try:
        decision = parse_control(raw, current, ("yolo11n", "yolo11n-int8"), lambda model: ("person", "car"))
    except ControlError as exc:
        assert str(exc)
        return
    assert isinstance(decision, Ping | Config | Report)
    if isinstance(decision, Report):
        assert 0.0 <= decision.e2e_ms <= 600_000
    if isinstance(decision, Config):
        th = decision.thresholds
        assert 0.0 <= th.conf <= 1.0 and 0.0 <= th.iou <= 1.0 and th.max_det == 300
        assert th.classes is None or all(isinstance(c, int) for c in th.classes)
        assert decision.settings.model in (None, "yolo11n", "yolo11n-int8")
        fps = decision.settings.max_fps
        assert fps is None or 0 < fps <= 240
        json.dumps(decision.ack("yolo11n", ("person", "car")))
