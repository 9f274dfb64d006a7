"""Detections for any consumer: SSE and WebSocket subscribers, the sessions API, session
tokens and snapshots — against the real server, real aiortc peers and real slow readers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.app import create_app, load_models
from rtc_server.config import Settings
from rtc_server.engine.detector import Detector
from rtc_server.engine.model_sources import parse_specs
from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import REGISTRY
from rtc_server.signaling.events import SUBSCRIPTIONS
from rtc_server.streams.stream import Stream

from .derived_models import class_subset
from .helpers import ServerFactory, serve, wait_for
from .stub_detector import StubDetector, boxes

# ----- helpers ---------------------------------------------------------------------------------


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any] | None]:
    """The messages of an SSE response; None for each keep-alive comment."""
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    async for raw in response.content:
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"data: "):
            yield json.loads(line[6:])
        elif line.startswith(b":"):
            yield None


async def sessions(http: aiohttp.ClientSession, url: str, **headers: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/sessions", headers=headers) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["sessions"]


async def stalled_reader(url: str, path: str, upgrade: bool = False) -> socket.socket:
    """A client that sends its request, reads the response head, then stops reading: a
    tiny receive buffer, so the server's writes back up almost at once."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    extra = ""
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = (f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n")
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.split(b" ")[1] in (b"200", b"101"), head
    return sock


async def watched(app: web.Application, stream: Stream, kind: str) -> dict[str, Any]:
    subs = [s.describe() for s in stream.sinks if getattr(s, "kind", None) == kind]
    assert len(subs) == 1, subs
    return subs[0]


class DescribedSource:
    """A source that describes itself, as pulled streams do (their URL, their state)."""

    kind = "pull"

    def describe(self) -> dict[str, Any]:
        return {"url": "rtsp://camera.example/stream", "state": "open"}

    async def stop(self) -> None:
        pass


# ----- the same messages as the data channel ---------------------------------------------------

async def test_sse_and_websocket_carry_the_data_channel_messages(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector,
    bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client, aiohttp.ClientSession() as http:
        sid = client.session_id
        await client.next_message()
        events = await http.get(f"{url}/sessions/{sid}/events")
        ws = await http.ws_connect(f"{url}/sessions/{sid}/ws")
        by_sse: dict[int, dict[str, Any]] = {}
        by_ws: dict[int, dict[str, Any]] = {}
        first_sse = first_ws = None

        async def read_sse() -> None:
            nonlocal first_sse
            async for m in sse(events):
                first_sse = first_sse or m
                if m and m["type"] == "detections":
                    by_sse[m["frame_id"]] = m
                if len(by_sse) >= 15:
                    return

        async def read_ws() -> None:
            nonlocal first_ws
            while len(by_ws) < 15:
                m = json.loads((await ws.receive()).data)
                first_ws = first_ws or m
                if m["type"] == "detections":
                    by_ws[m["frame_id"]] = m

        async with asyncio.timeout(30):
            await asyncio.gather(read_sse(), read_ws())
        by_channel: dict[int, dict[str, Any]] = {}
        while not client.messages.empty():
            m = client.messages.get_nowait()
            if m["type"] == "detections":
                by_channel[m["frame_id"]] = m
        events.close()
        await ws.close()

    # Each subscription opens with the settings in force, then carries the stream's messages:
    # for every frame seen on more than one path, the very same JSON.
    for first in (first_sse, first_ws):
        assert first is not None and first["type"] == "config" and first["model"] == "yolo11n"
        assert first["class_names"][5] == "bus"
    common = by_sse.keys() & by_ws.keys() & by_channel.keys()
    assert len(common) >= 5, (sorted(by_sse), sorted(by_ws), sorted(by_channel))
    for frame_id in common:
        assert by_sse[frame_id] == by_ws[frame_id] == by_channel[frame_id]
    assert boxes(by_sse[max(common)]["detections"]) == [d.to_dict() for d in stub.detections(640, 480)]
    await wait_for(lambda: len(app[REGISTRY]) == 0)


# ----- slow readers cannot grow the server ---------------------------------------------------

@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_a_stalled_reader_loses_old_messages_not_server_memory(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], kind: str
) -> None:
    """A reader that stops reading while 200 MB of distinct messages are published: the
    server holds its queue (32) plus the transport's bounded buffers, drops the rest (counted),
    and lets go of the connection when the session ends.

    What the server holds is measured as the peak of live Python allocations while it
    publishes (``tracemalloc``: the queue, the messages, the transport's buffer are all
    Python objects), not as this process's RSS, which the allocator and whatever else the
    process did move: an unbounded queue would hold all 200 MB, a bounded one a few."""
    app = stub_app(keepalive=60.0)
    url = await serve(aiohttp_server, app)
    stream = app[REGISTRY].open("pull")  # a stream fed by the test: the publishing path is real
    path = f"/sessions/{stream.id}/{'events' if kind == 'sse' else 'ws'}"
    sock = await stalled_reader(url, path, upgrade=kind == "ws")
    await wait_for(lambda: any(getattr(s, "kind", None) == kind for s in stream.sinks))
    count, size = 2000, 100_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(count):
            stream.publish({"type": "detections", "frame_id": i, "pad": f"{i:08d}" + "x" * size})
            if i % 20 == 0:
                await asyncio.sleep(0.005)  # let the server write (and block) as it would between frames
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown_mb = (peak - before) / 1e6
    async with aiohttp.ClientSession() as http:
        metrics = await (await http.get(f"{url}/metrics")).text()
    assert "rtc_subscribers_active 1.0" in metrics
    lost_metric = next(ln for ln in metrics.splitlines()
                       if ln.startswith(f'rtc_subscriber_messages_lost_total{{kind="{kind}"}}'))
    assert float(lost_metric.split()[1]) > count // 2
    assert grown_mb < 64, f"server grew {grown_mb:.0f} MB for {count * size / 1e6:.0f} MB published"
    sub = await watched(app, stream, kind)
    assert sub["queued"] <= 32
    assert sub["lost"] >= count - 32 - sub["delivered"] and sub["lost"] > count // 2, sub
    assert sub["delivered"] < count // 4, sub  # the reader really is stalled
    await stream.close("closed by test")
    # The session ended: the stalled connection is let go after the grace period, unread.
    await wait_for(lambda: not app[SUBSCRIPTIONS], timeout=30)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):  # what was in flight, then the end: reset (or EOF)
        try:
            while await loop.sock_recv(sock, 1 << 20):
                pass
        except ConnectionResetError:
            pass
    sock.close()
    print(f"\n{kind}: published {count * size / 1e6:.0f} MB, server RSS grew {grown_mb:.1f} MB; "
          f"delivered {sub['delivered']}, lost {sub['lost']}, queued {sub['queued']}")


async def test_a_reader_that_falls_behind_gets_the_newest_messages(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """A burst while the reader is away: it then sees the newest messages, with a gap for the rest."""
    app = stub_app(subscriber_queue=4)
    url = await serve(aiohttp_server, app)
    stream = app[REGISTRY].open("pull")
    async with aiohttp.ClientSession() as http, http.get(f"{url}/sessions/{stream.id}/events") as response:
        messages = sse(response)
        assert (await anext(messages))["type"] == "config"
        for i in range(100):
            stream.publish({"type": "detections", "frame_id": i})  # all before the reader reads again
        seen = []
        async with asyncio.timeout(10):
            while not seen or seen[-1] != 99:
                m = await anext(messages)
                if m is not None:
                    seen.append(m["frame_id"])
    assert seen[-1] == 99 and len(seen) <= 4 + 2, seen  # the queue (4), maybe one in the socket
    await stream.close()


# ----- the subscription's life ---------------------------------------------------------------

async def test_subscriptions_end_when_the_session_is_deleted(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client, aiohttp.ClientSession() as http:
        sid = client.session_id
        events = await http.get(f"{url}/sessions/{sid}/events")
        ws = await http.ws_connect(f"{url}/sessions/{sid}/ws")
        messages = sse(events)
        async with asyncio.timeout(20):
            while (m := await anext(messages)) is None or m["type"] != "detections":
                pass
        delete = await http.delete(f"{url}/sessions/{sid}")
        assert delete.status == 204
        assert app[REGISTRY].get(sid) is None  # closed by the time DELETE answers
        tail = [m async for m in messages]  # the stream ends
        assert tail and tail[-1] == {"type": "closed", "reason": "deleted"}, tail[-3:]
        ws_tail = []
        async with asyncio.timeout(10):
            async for msg in ws:
                ws_tail.append(json.loads(msg.data))
        assert ws_tail[-1] == {"type": "closed", "reason": "deleted"}
        assert ws.closed
        assert (await http.delete(f"{url}/sessions/{sid}")).status == 404
        assert (await http.get(f"{url}/sessions/{sid}/events")).status == 404
        assert await sessions(http, url) == []
        # The sender's peer connection was closed by the server.
        await wait_for(lambda: client.pc.connectionState in ("closed", "failed"))


async def test_keepalives_flow_while_nothing_else_does(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    app = stub_app(keepalive=0.2)
    url = await serve(aiohttp_server, app)
    stream = app[REGISTRY].open("pull")  # no frames: only keep-alives flow
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/sessions/{stream.id}/events") as events:
            messages = sse(events)
            assert (await anext(messages))["type"] == "config"
            async with asyncio.timeout(10):
                assert [await anext(messages) for _ in range(3)] == [None, None, None]
        ws = await http.ws_connect(f"{url}/sessions/{stream.id}/ws", autoping=False)
        assert json.loads((await ws.receive()).data)["type"] == "config"
        async with asyncio.timeout(10):
            for _ in range(3):
                ping = await ws.receive()
                assert ping.type == aiohttp.WSMsgType.PING
                await ws.pong(ping.data)
        await ws.close()
    await stream.close()


async def test_server_shutdown_ends_subscriptions_first(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """Shutdown tells every subscriber and lets go of it before aiohttp waits for open requests."""
    app = stub_app()
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    stream = app[REGISTRY].open("pull")
    async with aiohttp.ClientSession() as http:
        events = await http.get(f"{url}/sessions/{stream.id}/events")
        messages = sse(events)
        assert (await anext(messages))["type"] == "config"
        ws = await http.ws_connect(f"{url}/sessions/{stream.id}/ws")
        assert json.loads((await ws.receive()).data)["type"] == "config"
        closing = asyncio.ensure_future(server.close())
        async with asyncio.timeout(10):
            tail = [m async for m in messages if m is not None]
            ws_tail = [json.loads(msg.data) async for msg in ws]
            await closing
        assert tail == [{"type": "closed", "reason": "server shutting down"}]
        assert ws_tail == [{"type": "closed", "reason": "server shutting down"}]
    assert stream.closed  # and the cleanup closed the stream itself


async def test_subscribers_per_session_are_capped(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    app = stub_app(max_subscribers=1)
    url = await serve(aiohttp_server, app)
    stream = app[REGISTRY].open("pull")
    async with aiohttp.ClientSession() as http, http.get(f"{url}/sessions/{stream.id}/events") as first:
        assert first.status == 200
        second = await http.get(f"{url}/sessions/{stream.id}/events")
        assert second.status == 503 and (await second.json())["error"] == "too_many_subscribers"
        assert (await http.get(f"{url}/sessions/nope/events")).status == 404
    await wait_for(lambda: not stream.sinks)  # the first left when its reader closed
    await stream.close()


# ----- sessions list, settings over HTTP, snapshots --------------------------------------------

async def test_sessions_list_shows_every_live_session(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    pulled = app[REGISTRY].open("pull")  # what a pulled stream looks like to the list
    pulled.attach(DescribedSource())
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client, aiohttp.ClientSession() as http:
        for _ in range(10):
            await client.next_message()
        client.send({"type": "report", "e2e_ms": 48.5})  # what the page sends: its frame-matched figure
        events = await http.get(f"{url}/sessions/{client.session_id}/events")
        async with asyncio.timeout(15):
            while True:
                listed = {s["id"]: s for s in await sessions(http, url)}
                entry = listed[client.session_id]
                if entry["subscribers"] and entry["latency"]["e2e_ms_p50"] is not None:
                    break
                await asyncio.sleep(0.05)
        events.close()
    assert set(listed) == {client.session_id, pulled.id}
    entry = listed[client.session_id]
    assert entry["source"] == "offer" and listed[pulled.id]["source"] == "pull"
    assert entry["model"] == "yolo11n"
    assert entry["settings"] == {"conf": 0.25, "iou": 0.7, "classes": None, "max_fps": None,
                                 "tracking": True, "zones": [], "lines": [], "webhooks": []}
    assert entry["frames"]["processed"] >= 10 and entry["frames"]["received"] >= entry["frames"]["processed"]
    assert entry["rates"]["received_fps"] > 0 and entry["rates"]["processed_fps"] > 0
    assert entry["latency"]["server_ms_p50"] > 0 and entry["latency"]["e2e_ms_p50"] == 48.5
    assert [s["kind"] for s in entry["subscribers"]] == ["sse"]
    assert entry["urls"]["events"] == f"/sessions/{client.session_id}/events"
    assert entry["created"].endswith("Z") and entry["token"]
    assert entry["source_info"] is None
    assert listed[pulled.id]["source_info"] == {"url": "rtsp://camera.example/stream", "state": "open"}
    assert listed[pulled.id]["rates"]["received_fps"] == 0 and listed[pulled.id]["latency"]["server_ms_p50"] is None
    await pulled.close()


async def test_settings_change_over_http(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector,
    bus_frame: np.ndarray
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client, aiohttp.ClientSession() as http:
        target = f"{url}/sessions/{client.session_id}"
        await client.next_message()
        response = await http.patch(target, json={"classes": [5], "conf": 0.3})
        assert response.status == 200
        ack = await response.json()
        assert ack["type"] == "config" and ack["classes"] == [5] and ack["conf"] == 0.3
        # The sender's data channel is told, and detections follow the new settings.
        assert (await client.next_message("config"))["classes"] == [5]
        await client.next_message()  # may predate the change
        m = await client.next_message()
        assert {d["label"] for d in m["detections"]} == {"bus"}
        assert all(d["score"] >= 0.3 for d in m["detections"])
        bus_only = stub.detections(640, 480, Thresholds(conf=0.3, classes=frozenset({5})))
        assert boxes(m["detections"]) == [d.to_dict() for d in bus_only]
        assert (await http.patch(target, json={})).status == 200  # a query
        # Bad input: one validation path with the data channel, answered as JSON 4xx.
        for body, error in (({"conf": 2}, "bad_config"), ({"colour": "red"}, "bad_config"),
                            ({"model": "nope"}, "bad_config"), ({"max_fps": 0}, "bad_config"),
                            ({"type": "ping"}, "bad_config"), ([1, 2], "bad_config")):
            bad = await http.patch(target, json=body)
            assert bad.status == 400 and (await bad.json())["error"] == error, body
        bad = await http.patch(target, data="{", headers={"Content-Type": "application/json"})
        assert bad.status == 400 and (await bad.json())["error"] == "bad_json"
        bad = await http.patch(target, data="conf=1", headers={"Content-Type": "text/plain"})
        assert bad.status == 415
        assert (await http.patch(f"{url}/sessions/nope", json={})).status == 404
        listed = await sessions(http, url)
        assert listed[0]["settings"]["classes"] == [5] and listed[0]["settings"]["conf"] == 0.3
        # A WebSocket subscriber may steer too, through the same control path as the data channel.
        ws = await http.ws_connect(f"{target}/ws")
        assert json.loads((await ws.receive()).data)["conf"] == 0.3
        await ws.send_str(json.dumps({"type": "config", "conf": 0.4}))
        async with asyncio.timeout(20):
            while (m := json.loads((await ws.receive()).data))["type"] != "config":
                pass
        assert m["conf"] == 0.4  # the reply on the WebSocket ...
        while (m := await client.next_message("config"))["conf"] != 0.4:  # ... and the news on the data channel
            pass
        await ws.send_str(json.dumps({"type": "config", "conf": 9}))
        async with asyncio.timeout(20):
            while (m := json.loads((await ws.receive()).data))["type"] != "error":
                pass
        assert m["error"] == "bad_message"
        await ws.close()


async def test_the_model_changes_over_http(
    aiohttp_server: ServerFactory, settings: Settings, model_file: Path, bus_frame: np.ndarray,
    tmp_path: Path,
) -> None:
    """Two models served; PATCH switches a live session from one to the other."""
    people = class_subset(model_file, tmp_path / "people.onnx")
    catalog = load_models(Settings(models=parse_specs(f"yolo11n={model_file},people={people}#imgsz=320")))
    app = create_app(Settings(**{**settings.__dict__, "rate_limit": 0}), catalog)
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15)) as client, aiohttp.ClientSession() as http:
        assert (await client.next_message())["model"]["name"] == "yolo11n"
        response = await http.patch(f"{url}/sessions/{client.session_id}", json={"model": "people", "max_fps": 5})
        ack = await response.json()
        assert response.status == 200 and ack["model"] == "people" and ack["max_fps"] == 5
        assert ack["class_names"] == ["person", "bicycle", "car"]
        async with asyncio.timeout(20):
            while (m := await client.next_message())["model"]["name"] != "people":
                pass
        assert "bus" not in {d["label"] for d in m["detections"]} and m["input_hw"] == [256, 320]
        (entry,) = await sessions(http, url)
        assert entry["model"] == "people" and entry["settings"]["max_fps"] == 5


async def test_snapshot_shows_the_newest_frame(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray,
    detector: Detector,
) -> None:
    app = stub_app(snapshot_rate=0.01)  # one encode, then 429 for the test's lifetime
    # The server runs the stub; the real model looks at the snapshot: is it the picture sent?
    url = await serve(aiohttp_server, app)
    idle = app[REGISTRY].open("pull")
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client, aiohttp.ClientSession() as http:
        await client.next_message()
        response = await http.get(f"{url}/sessions/{client.session_id}/snapshot.jpg")
        assert response.status == 200 and response.content_type == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Size"] == "640x480"
        image = cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (480, 640, 3)
        (result,) = detector.detect([cv2.cvtColor(image, cv2.COLOR_BGR2RGB)], [Thresholds()])
        assert {d.label for d in result.detections} >= {"bus", "person"}
        # A newer frame within the budget: 429 with Retry-After (the same frame would be cached).
        statuses = set()
        for _ in range(100):
            again = await http.get(f"{url}/sessions/{client.session_id}/snapshot.jpg")
            statuses.add(again.status)
            if again.status == 429:
                assert (await again.json())["error"] == "rate_limited" and int(again.headers["Retry-After"]) >= 1
                break
            await asyncio.sleep(0.02)
        assert 429 in statuses
        no_frame = await http.get(f"{url}/sessions/{idle.id}/snapshot.jpg")
        assert no_frame.status == 503 and (await no_frame.json())["error"] == "no_frame_yet"
        assert (await http.get(f"{url}/sessions/nope/snapshot.jpg")).status == 404
    await idle.close()


# ----- auth: bearer for the API, session tokens for what a browser opens -----------------------

async def test_session_tokens_open_a_session_to_browsers(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app(auth_token=("alpha-token",), rate_limit=0)
    url = await serve(aiohttp_server, app)
    bearer = {"Authorization": "Bearer alpha-token"}
    other = app[REGISTRY].open("pull")
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15), token="alpha-token") as client, \
            aiohttp.ClientSession() as http:
        sid = client.session_id
        await client.next_message()
        # The API itself: bearer only.
        for method, path in (("GET", "/sessions"), ("PATCH", f"/sessions/{sid}"), ("DELETE", f"/sessions/{sid}"),
                             ("POST", f"/sessions/{sid}/token")):
            denied = await http.request(method, f"{url}{path}", json={})
            assert denied.status == 401 and (await denied.json())["error"] == "unauthorized", path
        (entry,) = [s for s in await sessions(http, url, **bearer) if s["id"] == sid]
        fresh = await (await http.post(f"{url}/sessions/{sid}/token", headers=bearer)).json()
        other_token = (await (await http.post(f"{url}/sessions/{other.id}/token", headers=bearer)).json())["token"]
        for path in ("events", "ws", "snapshot.jpg"):
            target = f"{url}/sessions/{sid}/{path}"
            for token in (None, "garbage", "123.abc", other_token, entry["token"][:-2] + "xx"):
                refused = await http.get(target, params=None if token is None else {"token": token})
                # Another session's (valid) token: 403, it does not carry the right; the rest: 401.
                assert refused.status == (403 if token == other_token else 401), (path, token)
            for params in ({"token": entry["token"]}, {"token": fresh["token"]}):
                if path == "ws":
                    ws = await http.ws_connect(target, params=params)
                    assert json.loads((await ws.receive()).data)["type"] == "config"
                    await ws.close()
                else:
                    async with http.get(target, params=params) as ok:
                        assert ok.status == 200, (path, await ok.text() if ok.status != 200 else "")
        for path in ("events", "snapshot.jpg"):  # the bearer token works too
            async with http.get(f"{url}/sessions/{sid}/{path}", headers=bearer) as ok:
                assert ok.status == 200
        # The token in /offer's answer opens the session it was issued for.
        async with http.get(f"{url}/sessions/{sid}/events", params={"token": client.session_token or ""}) as ok:
            assert ok.status == 200
    await other.close()
