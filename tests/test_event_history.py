"""The event history (issue 22): every stream's line and zone events written to the store in
batches and read back with ``GET /events``.

Real things: the real app (``stub_app``: the stub detector, whose one box the test moves frame
by frame across a line and into a zone, so the real tracker and analytics make the events),
its real SQLite store under the test's data dir, a real PostgreSQL (``tests/postgres.py``)
shared by two apps (any replica reads the history) and stopped and started under a live
stream. Frames are pushed into a registry stream (the transport is not what is tested here:
every source kind publishes through the same ``EventSink``, and ``tests/test_tracking_wire.py``
finds a pulled video's, an aiortc peer's and a WHIP client's crossing in the history with the
real model), each one waited for before the next, with pts 1/30 s apart: the frame time the
hysteresis counts is exact, nothing depends on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from rtc_server.app import DURABLE, HISTORY
from rtc_server.config import Settings
from rtc_server.outputs import EventHistory, HistoryConfig, HistoryEvent
from rtc_server.signaling.context import REGISTRY, TOKENS
from rtc_server.store import NewEvent, StoreConfig, StoreUnavailable, open_store
from rtc_server.streams.stream import Stream

from .helpers import ServerFactory, scrape, serve, wait_for
from .postgres import Postgres, postgres  # noqa: F401 - the session fixture
from .stub_detector import StubBox, StubDetector

#: A vertical line through the middle of the frame, drawn top to bottom; the right half a zone.
MIDDLE = {"name": "middle", "a": [0.5, 0.05], "b": [0.5, 0.99]}
RIGHT_HALF = {"name": "right", "polygon": [[0.55, 0.0], [1.0, 0.0], [1.0, 1.0], [0.55, 1.0]]}
FRAME = np.zeros((480, 640, 3), np.uint8)
#: pts of one frame at 30 fps on RTP's 90 kHz clock (a frame without time_base).
STEP = 3000
OPERATOR, PUBLISH = "operator-token-for-tests", "publish-token-for-tests"


def person_at(x: float) -> tuple[StubBox, ...]:
    """One person whose box's bottom centre is at ``x`` (fractions of the frame)."""
    return (StubBox((x - 0.06, 0.45, x + 0.06, 0.95), 0.9, 0),)


async def push(stream: Stream, pts: int) -> None:
    """One frame, waited for until the detector's answer was delivered (events made)."""
    done = stream.counts.processed + 1
    stream.push(FRAME, pts)
    await wait_for(lambda: stream.counts.processed >= done)


async def walk_across(stream: Stream, stub: StubDetector, frames: int = 40, start_pts: int = 0) -> int:
    """The person walks from x = 0.1 to 0.9 (across ``MIDDLE``, into ``RIGHT_HALF``): one
    ``line_cross`` and one ``zone_enter``. Returns the next pts."""
    pts = start_pts
    for i in range(frames):
        stub.boxes = person_at(0.1 + 0.8 * i / (frames - 1))
        await push(stream, pts)
        pts += STEP
    return pts


async def open_stream(app: web.Application, http: aiohttp.ClientSession, url: str,
                      headers: dict[str, str] | None = None) -> Stream:
    """A live session in the registry with the line and the zone (set by ``PATCH``)."""
    stream = app[REGISTRY].open("offer")
    stream.start()
    async with http.patch(f"{url}/sessions/{stream.id}", json={"lines": [MIDDLE], "zones": [RIGHT_HALF]},
                          headers=headers) as response:
        assert response.status == 200, await response.text()
    return stream


async def get(http: aiohttp.ClientSession, url: str, query: str = "", headers: dict[str, str] | None = None,
              status: int = 200) -> dict[str, Any]:
    async with http.get(f"{url}/events{query}", headers=headers) as response:
        body = await response.json()
        assert response.status == status, body
        return dict(body)


async def all_events(http: aiohttp.ClientSession, url: str, query: str = "?",
                     headers: dict[str, str] | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Every page of a listing, following ``next``."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await get(http, url, f"{query}&limit={limit}{cursor}", headers)
        out += page["events"]
        if page["next"] is None:
            return out
        cursor = f"&cursor={page['next']}"


async def until_stored(http: aiohttp.ClientSession, url: str, count: int, query: str = "?",
                       headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The history once ``count`` events are in it (the writer flushes within ~1 s)."""
    async with asyncio.timeout(15):
        while len(events := await all_events(http, url, query, headers)) < count:
            await asyncio.sleep(0.1)
    return events


# ----- end to end: events made by a live stream, read back ---------------------------------------
async def test_a_streams_events_are_kept_and_listed_filtered_and_paginated(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector) -> None:
    app = stub_app(rate_limit=0)
    url = await serve(aiohttp_server, app)
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with aiohttp.ClientSession() as http:
        a = await open_stream(app, http, url)
        await walk_across(a, stub)
        b = await open_stream(app, http, url)
        await walk_across(b, stub)

        events = await until_stored(http, url, 4)
        assert len(events) == 4, events  # one line_cross and one zone_enter each, nothing per frame
        assert [(e["stream_id"], e["type"]) for e in sorted(events, key=lambda e: (e["stream_id"] != a.id))] \
            in ([(a.id, "line_cross"), (a.id, "zone_enter"), (b.id, "line_cross"), (b.id, "zone_enter")],
                [(a.id, "zone_enter"), (a.id, "line_cross"), (b.id, "zone_enter"), (b.id, "line_cross")])
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # oldest first
        cross = next(e for e in events if e["stream_id"] == a.id and e["type"] == "line_cross")
        payload = cross["payload"]  # the event message as the sinks got it
        assert (payload["type"], payload["event"], payload["line"], payload["direction"], payload["label"]) \
            == ("event", "line_cross", "middle", "left", "person")  # facing down the line: left
        assert isinstance(payload["track_id"], int) and payload["frame_id"] >= 1
        assert datetime.fromisoformat(cross["time"]) >= before and cross["time"].endswith("Z")

        only_a = await all_events(http, url, f"?stream={a.id}")
        assert {e["stream_id"] for e in only_a} == {a.id} and len(only_a) == 2
        crossings = await all_events(http, url, "?type=line_cross")
        assert [e["stream_id"] for e in crossings] == [a.id, b.id]
        assert [e["type"] for e in await all_events(http, url, f"?stream={b.id}&type=zone_enter")] == ["zone_enter"]
        assert await all_events(http, url, "?stream=nobody") == []

        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await all_events(http, url, f"?since={later.replace('+00:00', 'Z')}") == []
        assert len(await all_events(http, url, f"?since={before.timestamp()}")) == 4
        assert len(await all_events(http, url, f"?since={before.replace(tzinfo=None).isoformat()}")) == 4
        b_time = min(e["time"] for e in events if e["stream_id"] == b.id)
        assert {e["stream_id"] for e in await all_events(http, url, f"?since={b_time}")} == {b.id}

        first = await get(http, url, "?limit=3")
        assert len(first["events"]) == 3 and first["next"] is not None
        paged = await all_events(http, url, "?", limit=1)  # one page each
        assert paged == events
        last = await get(http, url, f"?limit=3&cursor={first['next']}")
        assert last["events"] == events[3:] and last["next"] is None

        metrics = await scrape(url)
        assert metrics["rtc_events_history_written_total"] == 4
        assert metrics['rtc_events_history_dropped_total{reason="queue_full"}'] == 0


@pytest.mark.parametrize(("query", "error", "says"), [
    ("?limit=0", "bad_query", "limit"),
    ("?limit=1001", "bad_query", "limit"),
    ("?limit=ten", "bad_query", "limit"),
    ("?type=detections", "bad_query", "type"),
    ("?since=yesterday", "bad_query", "since"),
    ("?since=nan", "bad_query", "since"),
    ("?since=1e300", "bad_query", "since"),
    ("?cursor=e12x", "bad_cursor", "cursor"),
    ("?stream=" + "x" * 200, "bad_query", "stream"),
    ("?stream=", "bad_query", "stream"),
])
async def test_bad_parameters_are_a_400_saying_which(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], query: str, error: str,
        says: str) -> None:
    url = await serve(aiohttp_server, stub_app(rate_limit=0))
    async with aiohttp.ClientSession() as http:
        body = await get(http, url, query, status=400)
    assert body["error"] == error and says in body["detail"], body


async def test_a_session_token_reads_its_own_streams_events_only(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector) -> None:
    """With tokens: the operator sees every stream; a session's token (``?token=`` or the
    bearer) its own stream's events, even after the session ended; not another's, not the
    unfiltered list; a publish token, no token: refused."""
    app = stub_app(rate_limit=0, auth_token=(PUBLISH,), operator_token=(OPERATOR,))
    url = await serve(aiohttp_server, app)
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    async with aiohttp.ClientSession() as http:
        a = await open_stream(app, http, url, operator)
        await walk_across(a, stub)
        b = await open_stream(app, http, url, operator)
        await walk_across(b, stub)
        assert len(await until_stored(http, url, 4, headers=operator)) == 4
        token_a, _ = app[TOKENS].issue(a.id)
        await a.close("test")  # its history stays readable with its token

        mine = await all_events(http, url, f"?stream={a.id}&token={token_a}")
        assert len(mine) == 2 and {e["stream_id"] for e in mine} == {a.id}
        assert len(await all_events(http, url, f"?stream={a.id}", {"Authorization": f"Bearer {token_a}"})) == 2
        refused = await get(http, url, f"?stream={b.id}&token={token_a}", status=403)
        assert refused["error"] == "forbidden"
        await get(http, url, "?", {"Authorization": f"Bearer {token_a}"}, status=403)  # not everyone's
        await get(http, url, f"?stream={a.id}", {"Authorization": f"Bearer {PUBLISH}"}, status=403)
        await get(http, url, f"?stream={a.id}", status=401)
        await get(http, url, "", status=401)
        assert len(await all_events(http, url, f"?stream={b.id}", operator)) == 2


# ----- retention ------------------------------------------------------------------------------------------
async def test_retention_prunes_old_events_in_one_process_on_sqlite(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub_settings: Settings) -> None:
    """One process, the embedded SQLite, no cluster: the retention pass runs at start (and
    hourly) and deletes events older than ``event_retention``; younger ones stay. The
    injected clock then moves a day on: the next pass takes the rest."""
    now = datetime.now(UTC)
    store = await open_store(StoreConfig.for_data_dir(stub_settings.data_dir))
    try:
        await store.add_events([NewEvent("cam", "line_cross", now - timedelta(days=2), {"old": True}),
                                NewEvent("cam", "zone_enter", now - timedelta(minutes=5), {"old": False})])
    finally:
        await store.close()
    app = stub_app(rate_limit=0, event_retention=24 * 3600.0)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(15):
            while len(await all_events(http, url)) != 1:
                await asyncio.sleep(0.05)
        [kept] = await all_events(http, url)
        assert kept["payload"] == {"old": False}
        durable = app[DURABLE]
        durable.clock = lambda: now + timedelta(days=1)  # the injected clock, a day on
        assert await durable.prune_events() == 1
        assert await all_events(http, url) == []


# ----- the writer: bounded, never blocking, a database away costs counted drops --------------------
async def test_the_writer_batches_bounds_its_queue_and_drops_what_the_store_refuses() -> None:
    """``publish`` never waits: with the store stuck, the queue holds ``queue`` events and drops
    the oldest (counted); a batch the store refuses is dropped (counted) and the next one is
    tried again; ``close`` writes what is left. Detection messages are not history."""
    written: list[list[int]] = []
    stuck = asyncio.Event()
    refuse = False

    async def write(batch: Sequence[HistoryEvent]) -> None:
        if refuse:
            raise StoreUnavailable("the database did not answer (test)")
        await stuck.wait()
        written.append([e.payload["n"] for e in batch])

    history = EventHistory(write, HistoryConfig(queue=5, batch=3, interval_s=0.05))
    await history.start()

    def event(n: int) -> dict[str, Any]:
        return {"type": "event", "event": "line_cross", "n": n, "time": 1_765_000_000.0 + n}

    history.publish("s", {"type": "detections", "detections": []})
    history.publish("s", event(0))
    await wait_for(lambda: history.queued == 0)  # the writer took event 0 and waits on the store
    for n in range(1, 9):
        history.publish("s", event(n))  # returns at once although the store is stuck
    assert history.dropped == 3  # 1..3 dropped: 4..8 queued
    stuck.set()
    await wait_for(lambda: history.written == 6)
    assert written == [[0], [4, 5, 6], [7, 8]]

    refuse = True
    history.publish("s", event(9))
    await wait_for(lambda: history.dropped == 4)
    refuse = False
    history.publish("s", event(10))
    history.publish("s", event(11))
    await history.close()
    assert written[-1] == [10, 11] and history.written == 8
    history.publish("s", event(12))  # closed: ignored
    assert history.written == 8 and history.dropped == 4


async def test_shutdown_with_the_store_away_costs_one_failed_batch_not_one_per_batch() -> None:
    """``close`` with 10 events queued (batches of 3) and the database away: one write is
    tried, it fails, the other 7 are dropped with it (counted): shutdown waits one bound."""
    calls = 0

    async def write(batch: Sequence[HistoryEvent]) -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("the database did not answer (test)")

    history = EventHistory(write, HistoryConfig(queue=100, batch=3, interval_s=60))
    for n in range(10):
        history.publish("s", {"type": "event", "event": "zone_exit", "n": n})
    await history.close()
    assert (calls, history.dropped, history.written, history.queued) == (1, 10, 0, 0)


async def test_any_replica_reads_the_events_another_made(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector,
        postgres: Postgres) -> None:  # noqa: F811
    """Two replicas on one PostgreSQL: a stream on the first makes events; ``GET /events`` on
    the second lists them (it reads the shared database; nothing is forwarded)."""
    database = postgres.create_database()
    first = stub_app(rate_limit=0, database_url=database)
    second = stub_app(rate_limit=0, database_url=database)
    first_url = await serve(aiohttp_server, first)
    second_url = await serve(aiohttp_server, second)
    async with aiohttp.ClientSession() as http:
        stream = await open_stream(first, http, first_url)
        await walk_across(stream, stub)
        assert second[REGISTRY].get(stream.id) is None
        events = await until_stored(http, second_url, 2, f"?stream={stream.id}")
        assert sorted(e["type"] for e in events) == ["line_cross", "zone_enter"]
        assert events == await all_events(http, first_url, f"?stream={stream.id}")


async def test_a_database_that_goes_away_costs_counted_drops_never_the_stream(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], stub: StubDetector,
        postgres: Postgres) -> None:  # noqa: F811
    """On PostgreSQL: ``pg_ctl stop`` under a live stream. Its frames go on being detected,
    its events are dropped and counted, ``GET /events`` is a 503 with ``Retry-After``; after
    ``start`` new events are written again."""
    app = stub_app(rate_limit=0, database_url=postgres.create_database())
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        stream = await open_stream(app, http, url)
        pts = await walk_across(stream, stub)
        assert len(await until_stored(http, url, 2)) == 2
        postgres.stop()
        try:
            stub.boxes = ()
            pts += 3 * 90000  # the person gone long enough for its track to end
            await push(stream, pts)
            pts = await walk_across(stream, stub, start_pts=pts + STEP)  # a second walk: 2 (or 3) events
            await wait_for(lambda: app[HISTORY].dropped >= 2, timeout=30)
            assert not stream.closed  # every frame of the walk was detected meanwhile
            body = await get(http, url, "", status=503)
            assert body["error"] == "store_unavailable"
            metrics = await scrape(url)
            assert metrics['rtc_events_history_dropped_total{reason="write_failed"}'] >= 2
        finally:
            postgres.start()
        stub.boxes = ()
        await push(stream, pts + 3 * 90000)
        await walk_across(stream, stub, start_pts=pts + 4 * 90000)
        async with asyncio.timeout(30):
            while True:
                try:
                    events = await all_events(http, url)
                except AssertionError:  # 503 until the pool reconnects
                    events = []
                if len(events) >= 4:
                    break
                await asyncio.sleep(0.2)
        assert {e["type"] for e in events[2:]} >= {"line_cross", "zone_enter"}
