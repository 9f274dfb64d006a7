"""Tracks, zones, lines and events wired into live streams (issue 21), end to end: a real
aiortc peer (``/offer``), a WHIP client and a pulled video, the real model, the real app.

- every source kind gets ``track_id``s that hold across frames; ``"tracking": false`` turns
  them off wherever settings go (offer, ``config`` message, ``PATCH``, ``POST /streams``);
- zones and lines are settable on the same paths; bad geometry is a 400 saying why (HTTP) or
  a ``bad_message`` error (data channel); detection messages carry running ``counts``;
- a pulled video of a person walking across a line yields ``line_cross`` (and zone) events
  as messages of their own on SSE;
- the crossing's event, from a pulled video, an aiortc peer and a WHIP client alike, is in
  the event history (``GET /events?stream=<id>``, issue 22) as the sinks got it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from drivers.sinks import CollectingSink
from drivers.whip_client import WhipClient
from rtc_server.signaling.context import REGISTRY

from .helpers import ServerFactory, scrape, serve, wait_for
from .pull_media import MediaProcess, crossing_frames, make_clip, make_crossing, media_server
from .webhook_receiver import SECRET, Receiver

LOOPBACK = ("127.0.0.0/8",)
#: A vertical line through the middle of the frame, drawn top to bottom.
MIDDLE = {"name": "middle", "a": [0.5, 0.05], "b": [0.5, 0.99]}
RIGHT_HALF = {"name": "right", "polygon": [[0.55, 0.0], [1.0, 0.0], [1.0, 1.0], [0.55, 1.0]]}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("issue-21-media")
    make_crossing(folder / "crossing.mp4")
    make_clip(folder / "bus.mp4", "mp4", seconds=4.0)
    return folder


@pytest.fixture
async def http_media(media: Path) -> AsyncIterator[MediaProcess]:
    server = media_server(media)
    await server.start()
    yield server
    await server.stop()


async def stored_crossings(url: str, stream_id: str) -> list[dict[str, Any]]:
    """The ``line_cross`` events the history keeps for ``stream_id`` (the writer flushes
    within about a second)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(15):
        while True:
            async with http.get(f"{url}/events", params={"stream": stream_id, "type": "line_cross"}) as r:
                page = await r.json()
                assert r.status == 200, page
            if page["events"]:
                return list(page["events"])
            await asyncio.sleep(0.1)


def held_ids(messages: list[dict[str, Any]], label: str) -> list[int | None]:
    """The ``track_id`` of the highest-scoring ``label`` in each message that has one."""
    out = []
    for m in messages:
        boxes = [d for d in m["detections"] if d["label"] == label and not d.get("predicted")]
        if boxes:
            out.append(max(boxes, key=lambda d: d["score"])["track_id"])
    return out


def assert_ids_hold(messages: list[dict[str, Any]], label: str = "bus") -> None:
    ids = held_ids(messages, label)
    assert len(ids) >= 4, messages
    assert all("track_id" in d for m in messages for d in m["detections"])
    confirmed = [i for i in ids if i is not None]
    # tentative (null) on the first sighting at most, then one id that holds
    assert len(confirmed) >= len(ids) - 1 and len(set(confirmed)) == 1, ids
    assert isinstance(confirmed[0], int) and confirmed[0] >= 1


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    assert response.status == 200, await response.text()
    async for raw in response.content:
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


# ----- every source kind: track ids that hold -------------------------------------------------

async def test_an_aiortc_peer_gets_track_ids_and_counts_and_can_turn_tracking_off(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    fields = {"lines": [MIDDLE], "zones": [{**RIGHT_HALF, "classes": ["person"]}]}
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15), offer_fields=fields) as client:
        messages = [await client.next_message() for _ in range(6)]
        assert_ids_hold(messages)
        # the person on the right stands in the zone: inside once the hysteresis confirms it
        while messages[-1]["counts"]["zones"]["right"]["inside"] < 1 and len(messages) < 40:
            messages.append(await client.next_message())
        counts = messages[-1]["counts"]
        assert counts["lines"]["middle"] == {"left": 0, "right": 0, "by_class": {}}
        assert counts["zones"]["right"]["inside"] >= 1
        # The settings say what is in force, zones and lines included.
        client.send({"type": "config"})
        ack = await client.next_message("config")
        assert ack["tracking"] is True and ack["lines"] == [MIDDLE]
        assert ack["zones"][0]["classes"] == ["person"]
        # Bad geometry over the data channel: the control error, the settings unchanged.
        client.send({"type": "config", "zones": [{"name": "z", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}]})
        error = await client.next_message("error")
        assert error["error"] == "bad_message" and "intersects itself" in error["detail"], error
        client.send({"type": "config", "tracking": False})
        ack = await client.next_message("config")
        assert ack["tracking"] is False
        await client.next_message()  # one that may have been under way
        later = [await client.next_message() for _ in range(3)]
        assert all("track_id" not in d for m in later for d in m["detections"])
        assert not any("counts" in m for m in later)
    await wait_for(lambda: len(app[REGISTRY]) == 0)


async def test_an_offer_can_start_without_tracking_and_bad_geometry_is_a_400(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15), offer_fields={"tracking": False}) as client:
        messages = [await client.next_message() for _ in range(3)]
        assert all("track_id" not in d for m in messages for d in m["detections"])
    bad = DetectionClient(url, ImageTrack(bus_frame, fps=15),
                          offer_fields={"lines": [{"name": "door", "a": [0.2, 0.2], "b": [0.2, 0.2]}]})
    with pytest.raises(RuntimeError, match=r"400.*zero length"):
        await bad.connect()
    await bad.close()
    await wait_for(lambda: len(app[REGISTRY]) == 0)


async def test_a_whip_client_gets_track_ids_and_patch_sets_zones_and_tracking(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    client = WhipClient(f"{url}/whip", ImageTrack(bus_frame, fps=15))
    await client.connect()
    try:
        stream = app[REGISTRY].get(client.session_id or "")
        assert stream is not None and stream.source_kind == "whip"
        sink = CollectingSink()
        stream.add_sink(sink)
        assert_ids_hold([m for _, m in await sink.wait_for(5)])
        async with aiohttp.ClientSession() as http:
            patch = f"{url}/sessions/{stream.id}"
            async with http.patch(patch, json={"zones": [{"name": "z", "polygon": [[0, 0], [2, 0], [0, 1]]}]}) as r:
                body = await r.json()
                assert r.status == 400 and body["error"] == "bad_config", body
                assert "fractions of the frame" in body["detail"]
            # A stream's own webhooks: the SSRF rules when they are set (a private address here).
            async with http.patch(patch, json={"webhooks": [{"url": "http://10.1.2.3/hook"}]}) as r:
                body = await r.json()
                assert r.status == 400 and "private" in body["detail"], body
            async with http.patch(patch, json={"zones": [RIGHT_HALF]}) as r:
                assert r.status == 200 and (await r.json())["zones"] == [RIGHT_HALF]
            # the person standing there is inside once the hysteresis (0.25 s of frame time) confirms it
            await wait_for(lambda: sink.detections[-1][1].get("counts", {}).get("zones", {}).get("right", {})
                           .get("inside", 0) >= 1, 15)
            async with http.get(f"{url}/sessions") as r:
                (listed,) = (await r.json())["sessions"]
                assert listed["settings"]["tracking"] is True and listed["settings"]["zones"] == [RIGHT_HALF]
            async with http.patch(patch, json={"tracking": False}) as r:
                assert r.status == 200 and (await r.json())["tracking"] is False
            seen = len(sink.detections)
            await sink.wait_for(seen + 3)
            assert all("track_id" not in d for _, m in sink.detections[seen + 1:] for d in m["detections"])
    finally:
        await client.close()


# ----- a pulled video: ids, and a line crossing as an event on SSE ---------------------------

async def test_a_pulled_video_of_a_person_crossing_a_line_yields_events_on_sse(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], http_media: MediaProcess
) -> None:
    app = make_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    body = {"url": f"http://127.0.0.1:{http_media.port}/crossing.mp4", "conf": 0.2,
            "lines": [{**MIDDLE, "classes": ["person"]}], "zones": [RIGHT_HALF]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/streams", json=body) as r:
            answer = await r.json()
            assert r.status == 201, answer
        assert answer["tracking"] is True and answer["lines"] == [{**MIDDLE, "classes": ["person"]}]
        messages: list[dict[str, Any]] = []
        events = await http.get(f"{url}/sessions/{answer['id']}/events")
        async with asyncio.timeout(60):
            async for m in sse(events):
                messages.append(m)
                if m["type"] == "closed":
                    break
        events.close()
    detections = [m for m in messages if m["type"] == "detections"]
    events_ = [m for m in messages if m["type"] == "event"]
    assert len(detections) >= 10, [m["type"] for m in messages]
    person_ids = [i for i in held_ids(detections, "person") if i is not None]
    assert person_ids and len(set(person_ids)) == 1, held_ids(detections, "person")
    (cross,) = [e for e in events_ if e["event"] == "line_cross"]
    # Walking left to right across a line drawn top to bottom: standing at a facing b (down
    # the screen), the person moved to your left.
    assert cross["line"] == "middle" and cross["direction"] == "left" and cross["label"] == "person"
    assert cross["track_id"] == person_ids[0] and isinstance(cross["frame_id"], int)
    assert isinstance(cross["pts"], int) and isinstance(cross["time"], float)
    enter = [e for e in events_ if e["event"] == "zone_enter"]
    assert [e["zone"] for e in enter] == ["right"] and enter[0]["track_id"] == person_ids[0]
    # The running counts, in the detection messages after the crossing.
    last = detections[-1]["counts"]
    assert last["lines"]["middle"]["left"] == 1 and last["lines"]["middle"]["right"] == 0
    assert last["lines"]["middle"]["by_class"] == {"person": {"left": 1, "right": 0}}
    assert last["zones"]["right"]["entered"] == 1


async def test_post_streams_takes_tracking_off_and_refuses_bad_geometry(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], http_media: MediaProcess
) -> None:
    app = make_app(source_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    source = f"http://127.0.0.1:{http_media.port}/bus.mp4"
    async with aiohttp.ClientSession() as http:
        for bad, why in ((
            {"lines": [{"name": "x", "a": [0, 0], "b": [1, 1], "classes": ["unicorn"]}]}, "unknown class 'unicorn'"),
                ({"zones": [{"name": "z", "polygon": [[0, 0], [1, 0]]}]}, "at least 3 points"),
                ({"tracking": "no"}, "tracking must be true or false")):
            async with http.post(f"{url}/streams", json={"url": source, **bad}) as r:
                answer = await r.json()
                assert r.status == 400 and answer["error"] == "bad_stream" and why in answer["detail"], answer
        assert len(app[REGISTRY]) == 0
        async with http.post(f"{url}/streams", json={"url": source, "tracking": False}) as r:
            answer = await r.json()
            assert r.status == 201 and answer["tracking"] is False, answer
        stream = app[REGISTRY].get(answer["id"])
        assert stream is not None
        sink = CollectingSink()
        stream.add_sink(sink)
        messages = [m for _, m in await sink.wait_for(3, timeout=30)]
        assert messages and all("track_id" not in d for m in messages for d in m["detections"])
        async with http.patch(f"{url}/sessions/{stream.id}", json={"tracking": True}) as r:
            assert r.status == 200
        seen = len(sink.detections)
        messages = [m for _, m in await sink.wait_for(seen + 5, timeout=30)][seen:]
        assert_ids_hold(messages)
        async with http.delete(f"{url}/sessions/{stream.id}") as r:
            assert r.status == 204


async def test_events_of_a_pulled_video_reach_the_servers_and_the_streams_webhooks_signed(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], http_media: MediaProcess
) -> None:
    receiver = Receiver()  # the server's (RTC_WEBHOOK_URLS)
    own = Receiver(secret="the-streams-own-secret")  # the stream's ("webhooks" in its settings)
    hook, own_hook = await aiohttp_server(receiver.app()), await aiohttp_server(own.app())
    app = make_app(source_allow_networks=LOOPBACK, webhook_urls=(f"http://127.0.0.1:{hook.port}/hook",),
                   webhook_secret=SECRET, webhook_allow_networks=LOOPBACK)
    url = await serve(aiohttp_server, app)
    body = {"url": f"http://127.0.0.1:{http_media.port}/crossing.mp4", "conf": 0.2, "lines": [MIDDLE]}
    async with aiohttp.ClientSession() as http:
        # A stream's webhook follows the pull sources' SSRF rules: the metadata address is refused.
        refused = {**body, "webhooks": [{"url": "http://169.254.169.254/latest/meta-data"}]}
        async with http.post(f"{url}/streams", json=refused) as r:
            answer = await r.json()
            assert r.status == 400 and "link-local" in answer["detail"], answer
        own_url = f"http://user:pw@127.0.0.1:{own_hook.port}/hook?key=k"
        body["webhooks"] = [{"url": own_url, "secret": own.secret}]
        async with http.post(f"{url}/streams", json=body) as r:
            answer = await r.json()
            assert r.status == 201, answer
        # stated without the secret, the userinfo or the query
        assert answer["webhooks"] == [{"url": f"http://127.0.0.1:{own_hook.port}/hook", "signed": True}]
        await wait_for(lambda: len(app[REGISTRY]) == 0, 60)  # the clip plays to its end
        await wait_for(lambda: bool(receiver.events) and bool(own.events), 10)
        metrics = await scrape(url)
    assert receiver.bad_signatures == own.bad_signatures == 0
    (cross,) = receiver.events
    assert cross["type"] == "event" and cross["event"] == "line_cross" and cross["line"] == "middle"
    assert cross["direction"] == "left" and cross["stream_id"] == answer["id"]
    assert own.events == [cross]
    (stored,) = await stored_crossings(url, answer["id"])  # the stream is over; its history stays
    assert stored["payload"] == {k: v for k, v in cross.items() if k != "stream_id"}
    assert stored["stream_id"] == answer["id"] and stored["type"] == "line_cross"
    assert metrics['rtc_events_total{event="line_cross"}'] == 1
    assert metrics['rtc_event_deliveries_total{output="webhook"}'] == 2


# ----- the same crossing sent live: an aiortc peer (data channel + WebSocket), a WHIP client -------

@pytest.fixture(scope="module")
def walking() -> list[np.ndarray]:
    return crossing_frames()


def crossings(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["line"], e["direction"], e["label"]) for e in events if e.get("event") == "line_cross"]


async def test_an_aiortc_peer_gets_line_events_on_its_data_channel_and_a_websocket_too(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], walking: list[np.ndarray]
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    # The clip loops: the person walks across, then starts again at the left.
    async with DetectionClient(url, ImageTrack(walking, fps=15), offer_fields={"lines": [MIDDLE]}) as client, \
            aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{url}/sessions/{client.session_id}/ws")
        by_ws: list[dict[str, Any]] = []

        async def read_ws() -> None:
            while not crossings(by_ws):
                by_ws.append(json.loads((await ws.receive()).data))

        channel: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            reader = asyncio.ensure_future(read_ws())
            while not crossings(channel):
                channel.append(await client.messages.get())
            await reader
        await ws.close()
    assert crossings(channel)[0] == ("middle", "left", "person")
    (event,) = [m for m in channel if m["type"] == "event"][:1]
    assert event in by_ws  # the very same event message on both
    detections = [m for m in channel if m["type"] == "detections"]
    assert detections[-1]["counts"]["lines"]["middle"]["left"] >= 1
    await wait_for(lambda: len(app[REGISTRY]) == 0)
    assert (await stored_crossings(url, client.session_id or ""))[0]["payload"] == event


async def test_a_whip_client_gets_line_events(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], walking: list[np.ndarray]
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    client = WhipClient(f"{url}/whip", ImageTrack(walking, fps=15))
    await client.connect()
    try:
        stream = app[REGISTRY].get(client.session_id or "")
        assert stream is not None
        sink = CollectingSink()
        stream.add_sink(sink)
        async with aiohttp.ClientSession() as http, \
                http.patch(f"{url}/sessions/{stream.id}", json={"lines": [MIDDLE]}) as r:
            assert r.status == 200
        await wait_for(lambda: bool(crossings([m for _, m in sink.messages])), 60)
    finally:
        await client.close()
    assert crossings([m for _, m in sink.messages])[0] == ("middle", "left", "person")
    first = next(m for _, m in sink.messages if m.get("event") == "line_cross")
    assert (await stored_crossings(url, stream.id))[0]["payload"] == first
