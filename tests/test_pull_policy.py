"""The pull URL policy (SSRF) and the ``/streams`` API's answers.

Every refusal is proved twice where it can be: the policy's own verdict, and the HTTP
answer (400 with a reason) while a real loopback server that would have been the target
records that it was never contacted.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc_server.config import ConfigError, settings_from_text
from rtc_server.ingest.policy import SourcePolicy, UrlRefused
from rtc_server.ingest.reader import MAX_PACING_LAG, Pacer, describe, ffmpeg_input_protocols
from rtc_server.ingest.source import PullSource, backoff_delay
from rtc_server.ingest.spec import PullSpecError, parse_pull_spec, parse_sources
from rtc_server.signaling.context import REGISTRY
from tests.helpers import ROOT, free_port, serve, wait_for
from tests.pull_media import make_clip

LOOPBACK = ("127.0.0.0/8",)
POLICY = SourcePolicy.of(())


# ----- the policy on its own (no network) ------------------------------------------------------
@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "private"),
    ("http://127.0.0.1:8080/", "loopback"),
    ("rtsp://127.0.0.2/stream", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("rtsp://10.0.0.5/stream", "private"),
    ("rtsp://172.16.0.1/stream", "private"),
    ("rtsp://192.168.1.10:554/stream1", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "non-public"),
    ("http://224.0.0.1/", "multicast"),
    ("srt://[ff02::1]:9000", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("HTTP://example.com@127.0.0.1/", "loopback"),
    ("gopher://example.com/", "scheme 'gopher'"),
    ("data:,hello", "scheme 'data'"),
    ("tcp://8.8.8.8:80", "scheme 'tcp'"),
    ("concat:http://8.8.8.8/a.ts|file:///etc/passwd", "scheme 'concat'"),
    ("/etc/passwd", "scheme '(none)'"),
    ("http://8.8.8.8/a\r\nX-Injected: 1", "printable ASCII"),
    ("http://8.8.8.8/a b", "printable ASCII"),
    ("http://8.8.8.8/x#frag", "fragment"),
    ("http://8.8.8.8:99999/", "does not parse"),
    ("srt://8.8.8.8", "needs a port"),
    ("srt://8.8.8.8:9000?mode=listener", "SRT caller"),
    ("http:///nohost", "no host"),
])
def test_the_policy_refuses_without_touching_the_network(url: str, why: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        POLICY.parse(url)
    assert why in refused.value.detail


def test_the_policy_allows_public_and_listed_networks_and_hides_passwords() -> None:
    assert POLICY.parse("rtsp://8.8.8.8/live").port == 554
    lan = SourcePolicy.of(["192.168.1.0/24", "fd00::/8"])
    camera = lan.parse("rtsp://admin:s3cret@192.168.1.10:554/Streaming/Channels/101")
    assert camera.redacted == "rtsp://admin:***@192.168.1.10:554/Streaming/Channels/101"
    assert lan.resolve(camera) == ["192.168.1.10"]
    assert lan.parse("http://[fd00::5]/a.m3u8").pinned("fd00::5") == "http://[fd00::5]:80/a.m3u8"
    with pytest.raises(UrlRefused, match="private"):
        lan.parse("rtsp://192.168.2.10/stream")  # the next subnet is not listed
    assert SourcePolicy.of([], allow_file=True).parse("file:///srv/clips/a%20b.mp4").target == "/srv/clips/a b.mp4"
    with pytest.raises(ValueError, match="not a network"):
        SourcePolicy.of(["192.168.1.0/33"])


@pytest.mark.parametrize("host", ["localhost", "2130706433", "127.1"])
def test_a_host_name_is_judged_by_every_address_it_resolves_to(host: str) -> None:
    """Names (and the numeric forms inet_aton accepts) that resolve to loopback here."""
    source = POLICY.parse(f"http://{host}:8080/")  # a name: parse cannot know yet
    with pytest.raises(UrlRefused, match="loopback"):
        POLICY.resolve(source)


def test_allowed_is_exact_about_networks() -> None:
    policy = SourcePolicy.of(["127.0.0.0/8"])
    assert policy.allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.allowed(ipaddress.ip_address("::ffff:127.0.0.1"))  # the same address
    assert not policy.allowed(ipaddress.ip_address("::1"))  # another family, not listed
    assert not policy.allowed(ipaddress.ip_address("10.0.0.1"))


def test_stream_requests_are_checked_like_control_messages() -> None:
    spec = parse_pull_spec({"url": "rtsp://8.8.8.8/x", "conf": 0.4, "classes": [0, 5], "max_fps": 5}, ["yolo11n"])
    assert spec.config == {"conf": 0.4, "classes": [0, 5], "max_fps": 5} and not spec.loop
    for body, error in [({"url": "rtsp://x", "conf": 2}, "conf"), ({"url": "rtsp://x", "model": "nope"}, "model"),
                        ({"url": "rtsp://x", "extra": 1}, "unknown fields"), ({"url": 5}, "'url'"),
                        ({"url": "rtsp://x", "loop": "yes"}, "'loop'"), ([], "JSON object")]:
        with pytest.raises(PullSpecError, match=error):
            parse_pull_spec(body, ["yolo11n"])
    assert parse_sources("rtsp://a/1, rtsp://b/2") == ({"url": "rtsp://a/1"}, {"url": "rtsp://b/2"})
    assert parse_sources('["rtsp://a/1", {"url": "http://b/c.m3u8", "loop": true}]')[1]["loop"] is True


def test_rtc_sources_are_validated_at_start() -> None:
    with pytest.raises(ConfigError, match=r"sources\[0\].*private"):
        settings_from_text({"sources": "rtsp://192.168.1.10/stream"})
    with pytest.raises(ConfigError, match=r"sources\[1\].*scheme 'file'"):
        settings_from_text({"sources": "rtsp://8.8.8.8/a,file:///etc/passwd"})
    with pytest.raises(ConfigError, match="unknown fields"):
        settings_from_text({"sources": '[{"url": "rtsp://8.8.8.8/a", "fps": 3}]'})
    with pytest.raises(ConfigError, match="not JSON"):
        settings_from_text({"sources": '[{"url": '})
    with pytest.raises(ConfigError, match="not a network"):
        settings_from_text({"source_allow_networks": "lan"})
    settings = settings_from_text({"sources": "rtsp://192.168.1.10/stream", "source_allow_networks": "192.168.1.0/24"})
    assert settings.sources == ({"url": "rtsp://192.168.1.10/stream"},)
    assert "192.168.1.10" not in repr(settings)  # URLs may carry credentials: not in logs


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    lows = [backoff_delay(n, 0.5, 30.0, rand=lambda: 0.0) for n in range(9)]
    highs = [backoff_delay(n, 0.5, 30.0, rand=lambda: 1.0) for n in range(9)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert highs == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_the_pacer_plays_at_the_media_rate_and_never_catches_up() -> None:
    now = [100.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.delay(0.0) == 0.0
    assert pacer.delay(1.0) == pytest.approx(1.0)  # one media second later: wait a second
    now[0] += 1.0  # (waited)
    now[0] += 2 * MAX_PACING_LAG  # fell behind (a stall): restart the clock, no burst
    assert pacer.delay(1.1) == 0.0 and pacer.delay(1.2) == pytest.approx(0.1)
    assert pacer.delay(0.0) == 0.0  # time went backwards (a loop): restart the clock


# ----- the API, against a real loopback server that must not be contacted ------------------------
class Canary:
    """A loopback HTTP server that records every request it gets."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[str] = []
        self.folder = folder
        self.app = web.Application(middlewares=[self._record])
        self.app.router.add_get("/redirect", self._redirect)
        self.app.router.add_get("/truncated.ts", self._truncated)
        self.app.router.add_static("/", folder)
        self.url = ""

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        return await handler(request)

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        """long.ts, announced whole (ranges honoured); a connection that starts in the first
        half drops at 75 % (FFmpeg's look at the tail for the duration is served whole, so
        the drop comes during playback)."""
        data = (self.folder / "long.ts").read_bytes()
        start = request.http_range.start or 0
        response = web.StreamResponse(status=206 if start else 200, headers={"Content-Type": "video/mp2t"})
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response.content_length = len(data) - start
        await response.prepare(request)
        if start >= len(data) // 2:
            await response.write(data[start:])
            return response
        await response.write(data[start: len(data) * 3 // 4])
        assert request.transport is not None
        request.transport.close()
        return response


@pytest.fixture(scope="module")
def canary_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("issue-13-pull-canary")
    make_clip(folder / "bus.ts", "mpegts", seconds=2.0)
    make_clip(folder / "long.ts", "mpegts", seconds=4.0)
    fifo = folder / "secret.ts"
    os.mkfifo(fifo)  # opening it for reading would block: a 400 in time proves it was not opened
    (folder / "file-segment.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{fifo}\n#EXT-X-ENDLIST\n")
    (folder / "metadata-segment.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nhttp://169.254.169.254/latest/seg.ts\n#EXT-X-ENDLIST\n")
    return folder


@pytest.fixture
async def canary(aiohttp_server: Callable[..., Any], canary_media: Path) -> Canary:
    server = Canary(canary_media)
    test_server: TestServer = await aiohttp_server(server.app, host="127.0.0.1")
    server.url = str(test_server.make_url("")).rstrip("/")
    return server


async def post_stream(http: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/streams", json=body, **kwargs) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("target", [
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "CANARY/bus.ts",  # loopback, not allowed
    "http://localhost:PORT/bus.ts",  # a name that resolves to loopback
    "rtsp://localhost:PORT/bus",
    "gopher://CANARY_HOST/",
])
async def test_ssrf_attempts_are_refused_with_400_and_reach_nothing(
        aiohttp_server: Any, stub_app: Callable[..., web.Application], canary: Canary, target: str) -> None:
    port = canary.url.rsplit(":", 1)[1]
    url_ = (target.replace("CANARY_HOST", f"127.0.0.1:{port}").replace("CANARY", canary.url)
            .replace("PORT", port))
    app = stub_app()  # no RTC_SOURCE_ALLOW_NETWORKS: loopback is off limits
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        status, answer = await post_stream(http, url, {"url": url_})
    assert (status, answer["error"]) == (400, "url_refused"), answer
    assert canary.requests == [] and len(app[REGISTRY]) == 0


@pytest.mark.parametrize(("path", "why"), [
    ("file-segment.m3u8", "scheme 'file' is not allowed"),
    ("metadata-segment.m3u8", "link-local"),
    ("redirect?to=http://169.254.169.254/latest/meta-data/", "link-local"),
    ("redirect?to=file:///etc/passwd", "scheme 'file' is not allowed"),
])
async def test_what_an_allowed_source_points_at_is_checked_too(
        aiohttp_server: Any, stub_app: Callable[..., web.Application], canary: Canary, path: str, why: str) -> None:
    """An HLS playlist's segments and an HTTP redirect go through the same policy: the
    playlist's server is allowed (loopback listed), what it points at is not."""
    app = stub_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        status, answer = await post_stream(http, url, {"url": f"{canary.url}/{path}"})
        text = await (await http.get(f"{url}/metrics")).text()
    assert (status, answer["error"]) == (400, "url_refused"), answer
    assert why in answer["detail"]
    assert canary.requests == ["/" + path] and len(app[REGISTRY]) == 0
    assert 'rtc_pull_open_failures_total{kind="refused"} 1.0' in text


async def test_bad_requests_and_unreachable_sources(aiohttp_server: Any, stub_app: Callable[..., web.Application],
                                                   canary: Canary) -> None:
    app = stub_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        assert (await post_stream(http, url, {"url": canary.url + "/bus.ts", "model": "nope"}))[0] == 400
        assert (await post_stream(http, url, {"uri": canary.url + "/bus.ts"}))[1]["error"] == "bad_stream"
        async with http.post(f"{url}/streams", data="url=x", headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415
        status, answer = await post_stream(http, url, {"url": canary.url + "/missing.ts"})
        assert (status, answer["error"]) == (422, "source_unavailable") and "404" in answer["detail"]
        closed = free_port()
        status, answer = await post_stream(http, url, {"url": f"rtsp://127.0.0.1:{closed}/x"})
        assert (status, answer["error"]) == (422, "source_unavailable") and "connection" in answer["detail"]
        status, answer = await post_stream(http, url, {"url": "srt://127.0.0.1:9/x" if "srt" in
                                                       ffmpeg_input_protocols() else "srt://8.8.8.8:9000"})
        assert (status, answer["error"]) == (422, "source_unavailable")
        for method in ("GET", "DELETE"):
            async with http.request(method, f"{url}/streams/0123") as response:
                assert (response.status, (await response.json())["error"]) == (404, "unknown_stream")
        text = await (await http.get(f"{url}/metrics")).text()
    assert 'rtc_pull_open_failures_total{kind="http_status"} 1.0' in text
    assert 'rtc_pull_open_failures_total{kind="connection"} 1.0' in text
    assert len(app[REGISTRY]) == 0


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
async def test_a_silent_source_times_out(aiohttp_server: Any, stub_app: Callable[..., web.Application],
                                         scheme: str) -> None:
    """A server that accepts the connection and never answers (a hung camera)."""
    app = stub_app(source_allow_networks=LOOPBACK, source_open_timeout=1.0, source_read_timeout=1.0)
    url = await serve(aiohttp_server, app)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the handshake; nobody ever reads or writes
        port = silent.getsockname()[1]
        async with aiohttp.ClientSession() as http:
            status, answer = await post_stream(http, url, {"url": f"{scheme}://127.0.0.1:{port}/x"})
    assert (status, answer["error"]) == (422, "source_unavailable")
    assert "(timeout)" in answer["detail"], answer


async def test_a_download_cut_short_is_a_drop_not_the_end_of_the_clip(
        aiohttp_server: Any, stub_app: Callable[..., web.Application], canary: Canary) -> None:
    app = stub_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        status, answer = await post_stream(http, url, {"url": canary.url + "/truncated.ts"})
        assert status == 201, answer
        stream = app[REGISTRY].get(answer["id"])
        assert stream is not None and isinstance(stream.source, PullSource)
        source = stream.source
        await wait_for(lambda: source.reconnects >= 1, 30)
        assert not stream.closed and "closed at byte" in (source.last_error or "")
        async with http.delete(f"{url}/streams/{stream.id}") as response:
            assert response.status == 204


async def test_streams_need_the_token_and_count_against_max_sessions(
        aiohttp_server: Any, stub_app: Callable[..., web.Application], canary: Canary) -> None:
    app = stub_app(source_allow_networks=LOOPBACK, max_sessions=1, auth_token=("t0ken",))
    url = await serve(aiohttp_server, app)
    body = {"url": canary.url + "/bus.ts", "loop": True}
    auth = {"Authorization": "Bearer t0ken"}
    async with aiohttp.ClientSession() as http:
        assert (await post_stream(http, url, body))[0] == 401
        assert (await http.get(f"{url}/streams")).status == 401
        status, first = await post_stream(http, url, body, headers=auth)
        assert status == 201 and first["url"] == body["url"] and first["loop"] is True
        status, answer = await post_stream(http, url, body, headers=auth)
        assert (status, answer["error"]) == (503, "server_full")
        assert (await http.delete(f"{url}/streams/{first['id']}")).status == 401
        async with http.delete(f"{url}/streams/{first['id']}", headers=auth) as response:
            assert response.status == 204
        assert len(app[REGISTRY]) == 0  # the slot is free at once
        status, second = await post_stream(http, url, body, headers=auth)
        assert status == 201 and second["id"] != first["id"]
        listed = await (await http.get(f"{url}/streams", headers=auth)).json()
        assert [s["id"] for s in listed["streams"]] == [second["id"]]


async def test_rtc_sources_start_with_the_server_and_wait_for_their_source(
        aiohttp_server: Any, stub_app: Callable[..., web.Application], canary: Canary) -> None:
    """A camera that comes up after the server: the configured stream keeps retrying."""
    port = free_port()
    app = stub_app(source_allow_networks=LOOPBACK, sources=({"url": f"http://127.0.0.1:{port}/bus.ts", "loop": True},))
    url = await serve(aiohttp_server, app)
    registry = app[REGISTRY]
    (stream,) = list(registry)
    source = stream.source
    assert stream.source_kind == "pull" and isinstance(source, PullSource)
    await wait_for(lambda: source.reconnects >= 1, 30)  # nothing listens there yet
    assert source.state == "reconnecting" and "Connection refused" in (source.last_error or "")
    late = Canary(canary.folder)
    await aiohttp_server(late.app, host="127.0.0.1", port=port)  # the source comes up
    await wait_for(lambda: stream.counts.processed > 0, 60)
    assert late.requests and registry.get(stream.id) is stream
    async with aiohttp.ClientSession() as http:
        text = await (await http.get(f"{url}/metrics")).text()
    assert 'rtc_pull_open_failures_total{kind="connection"}' in text
    with pytest.raises(ConfigError, match="model"):
        stub_app(sources=({"url": "rtsp://8.8.8.8/x", "model": "missing"},))


class FakeNames:
    """Names only this test knows, answered in order (a DNS that changes its answer); every
    other name goes to the real resolver. FFmpeg's C resolver does not see these names, so
    a source named by one works only if its connection goes to the address we checked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self._getaddrinfo)

    def _getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in self.answers:
            self.calls.append(host)
            address = self.answers[host].pop(0) if len(self.answers[host]) > 1 else self.answers[host][0]
            return self._real(address, port, *args, **kwargs)
        return self._real(host, port, *args, **kwargs)


async def test_the_connection_goes_to_the_checked_address_and_a_changed_answer_is_refused(
        aiohttp_server: Any, stub_app: Callable[..., web.Application], canary: Canary,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = canary.url.rsplit(":", 1)[1]
    names = FakeNames(monkeypatch, {"camera.test": ["127.0.0.1"], "rebind.test": ["127.0.0.1", "10.1.2.3"]})
    app = stub_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        status, answer = await post_stream(http, url, {"url": f"http://camera.test:{port}/bus.ts", "loop": True})
        assert status == 201, answer  # reached only through the checked address: nothing else knows the name
        async with http.delete(f"{url}/streams/{answer['id']}") as response:
            assert response.status == 204
        # DNS rebinding: the check at POST sees loopback (allowed), the connection's own
        # resolution sees 10.1.2.3: refused before any packet goes there.
        status, answer = await post_stream(http, url, {"url": f"http://rebind.test:{port}/bus.ts"})
    assert (status, answer["error"]) == (400, "url_refused") and "10.1.2.3" in answer["detail"]
    assert names.calls.count("rebind.test") == 2 and len(app[REGISTRY]) == 0


def test_failures_never_show_a_url_password() -> None:
    error = ConnectionRefusedError(111, "Connection refused", "rtsp://admin:s3cret@192.168.1.10:554/live")
    assert describe(error) == "ConnectionRefusedError: [Errno 111] Connection refused: " \
                              "'rtsp://admin:***@192.168.1.10:554/live'"


def test_ingest_imports_no_transport_or_http_face() -> None:
    """Pull sources are sources like the WebRTC peer: no aiortc, no aiohttp, no routes."""
    for path in (ROOT / "rtc_server" / "ingest").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("aiortc", "aioice", "aiohttp", "signaling"), (path, name)
                assert "signaling" not in name.split("."), (path, name)
                assert "webrtc" not in name, (path, name)


URL_PIECES = st.sampled_from(["http://", "https://", "rtsp://", "srt://", "file://", "gopher://", "HTTP://", "//",
                              "@", ":", "[", "]", "::1", "127.0.0.1", "169.254.169.254", "0x7f.1", "%00", "\r\n",
                              "#", "?", "/", "localhost", "a", "é", " ", "8.8.8.8", ":99999", ":0", "%40", "\\"])


@settings(max_examples=300, deadline=None)
@given(url=st.one_of(st.lists(URL_PIECES, max_size=8).map("".join), st.text(max_size=60)),
       extra=st.dictionaries(st.sampled_from(["conf", "iou", "classes", "model", "max_fps", "loop", "x"]),
                             st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                       st.lists(st.integers(), max_size=3)), max_size=3))
def test_the_url_and_body_checks_answer_anything_with_their_own_errors(url: str, extra: dict[str, Any]) -> None:
    """Pure (no resolution, no connection): whatever the input, the checks either accept it
    or raise their own error, which the API turns into a 400 — never a 500."""
    policy = SourcePolicy.of(["10.0.0.0/8"], allow_file=True)
    try:
        spec = parse_pull_spec({"url": url, **extra}, ["yolo11n"])
        source = policy.parse(spec.url)
    except (PullSpecError, UrlRefused):
        return
    assert source.scheme in policy.schemes
    assert all(0x21 <= ord(c) <= 0x7E for c in source.url)
    if source.scheme != "file":
        assert source.host and 0 < source.port < 65536
        assert "@" not in source.pinned("192.0.2.1").split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
