"""Durable pull streams (issue 22, the wiring): ``POST /streams`` is written to the store and
comes back, with the same id, when the server starts again; the store's failures at start
stop the server with exit 1 and a clear message.

Real things only: ``python -m rtc_server`` processes (their own SQLite file under
``RTC_DATA_DIR``), a real HTTP media server, SSE read off the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtc_server.app import DURABLE
from rtc_server.config import ConfigError, Settings
from rtc_server.signaling.context import REGISTRY
from rtc_server.store import StoreUnavailable

from .helpers import ROOT, ServerFactory, ServerProcess, first_detection, free_port, serve, wait_for
from .pull_media import MediaProcess, make_clip, media_server

LOOPBACK = {"RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
            "RTC_LOG_LEVEL": "INFO"}
#: Receivers a stream names (nothing listens there: no lines, no events; only where they are kept).
HOOK_A = {"url": "http://127.0.0.1:9/a", "secret": "secret-a"}
HOOK_B = {"url": "http://127.0.0.1:9/b"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    make_clip(folder / "bus.mp4", "mp4", seconds=2.0)
    return folder


@pytest.fixture
async def http_media(clip: Path) -> AsyncIterator[MediaProcess]:
    server = media_server(clip)
    await server.start()
    yield server
    await server.stop()


async def listed_streams(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/streams") as response:
        assert response.status == 200, await response.text()
        return list((await response.json())["streams"])


async def wait_listed(url: str, ids: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        streams = await listed_streams(url)
        if sorted(s["id"] for s in streams) == sorted(ids):
            return streams
        if time.monotonic() > deadline:
            raise AssertionError(f"GET /streams shows {[s['id'] for s in streams]}, not {ids}")
        await asyncio.sleep(0.3)


# ----- settings ---------------------------------------------------------------------------------
def test_store_settings_are_checked_and_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="internal_secret is required"):
        Settings(internal_url="http://10.0.0.5:8080")
    with pytest.raises(ConfigError, match="internal_url"):
        Settings(internal_url="10.0.0.5:8080", internal_secret="s" * 16)
    with pytest.raises(ConfigError, match="too short"):
        Settings(internal_url="http://10.0.0.5:8080", internal_secret="short")
    with pytest.raises(ConfigError, match="lease_seconds"):
        Settings(lease_seconds=0)
    with pytest.raises(ConfigError, match="event_retention"):
        Settings(event_retention=-1)
    settings = Settings(database_url="postgresql://rtc:hunter2-db@db:5432/rtc", internal_url="http://10.0.0.5:8080",
                        internal_secret="hunter2-internal-secret", data_dir=tmp_path)
    assert "hunter2" not in repr(settings)
    assert Settings().data_dir == Path("data")


# ----- start-up failures: exit 1, saying what to fix --------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://rtc@db/rtc", "PostgreSQL"),
    ("postgresql://rtc:hunter2@/rtc", "names no host"),
    ("not a url", "not a database URL"),
])
def test_a_database_url_that_cannot_work_exits_1(spawn: Callable[..., ServerProcess], url: str,
                                                  expected: str) -> None:
    process = spawn({"RTC_DATABASE_URL": url})
    assert process.wait(60) == 1, process.log[-2000:]
    assert expected in process.log and "hunter2" not in process.log, process.log[-2000:]


def test_a_database_unreachable_at_start_exits_1(spawn: Callable[..., ServerProcess], model_file: Path) -> None:
    port = free_port()  # nothing listens there
    process = spawn({"RTC_MODEL": str(model_file), "RTC_DATABASE_URL": f"postgresql://rtc:hunter2@127.0.0.1:{port}/rtc"})
    assert process.wait(90) == 1, process.log[-2000:]
    log = process.log
    assert "cannot open the store" in log and "is PostgreSQL running" in log, log[-2000:]
    assert "hunter2" not in log and "Traceback" not in log, log[-2000:]


def test_a_data_dir_that_cannot_be_created_exits_1(spawn: Callable[..., ServerProcess], tmp_path: Path,
                                                   model_file: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    process = spawn({"RTC_MODEL": str(model_file), "RTC_DATA_DIR": str(blocker / "data")})
    assert process.wait(90) == 1, process.log[-2000:]
    assert "RTC_DATA_DIR" in process.log, process.log[-2000:]


# ----- a stream survives restarts -----------------------------------------------------------------
async def test_a_pulled_stream_comes_back_with_its_id_after_a_restart(
        spawn: Callable[..., ServerProcess], http_media: MediaProcess, model_file: Path) -> None:
    """POST a stream, SIGTERM the server, start it again: the stream is back with the same id
    and detections flow (SSE), with the settings and webhooks it was PATCHed to. Again after
    ``kill -9`` (the embedded SQLite restarted without a clean close). DELETE forgets it for
    good. Fails without the store: nothing is written, and the restarted server lists no stream."""
    server = spawn({**LOOPBACK, "RTC_MODEL": str(model_file)}, wait=True)
    body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "loop": True, "conf": 0.3, "webhooks": [HOOK_A]}
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/streams", json=body) as response:
        answer = await response.json()
        assert response.status == 201, answer
    stream_id = answer["id"]
    assert (await first_detection(server.url, stream_id))["type"] == "detections"
    async with aiohttp.ClientSession() as http, \
            http.patch(f"{server.url}/sessions/{stream_id}",
                       json={"conf": 0.45, "classes": [0, 5], "webhooks": [HOOK_A, HOOK_B]}) as response:
        assert response.status == 200, await response.text()  # kept: a restart brings it back as it is now

    assert server.stop() == 0, server.log[-2000:]
    assert "released 1 stream" in server.log
    server.start()
    [restored] = await wait_listed(server.url, [stream_id])
    assert restored["url"] == body["url"] and restored["loop"] is True
    assert restored["webhooks"] == [{"url": HOOK_A["url"], "signed": True}, {"url": HOOK_B["url"], "signed": False}]
    async with aiohttp.ClientSession() as http, \
            http.patch(f"{server.url}/sessions/{stream_id}", json={}) as response:  # {}: a query
        ack = await response.json()
    assert (ack["conf"], ack["classes"]) == (0.45, [0, 5]), ack
    detection = await first_detection(server.url, stream_id)
    assert {d["label"] for d in detection["detections"]} & {"bus", "person"}, detection

    server.kill()  # kill -9: no release, no clean close of the SQLite file
    server.start()
    await wait_listed(server.url, [stream_id])
    await first_detection(server.url, stream_id)

    async with aiohttp.ClientSession() as http, http.delete(f"{server.url}/streams/{stream_id}") as response:
        assert response.status == 204
    await wait_listed(server.url, [])
    assert server.stop() == 0
    server.start()
    await asyncio.sleep(2.0)  # a lease round: nothing to restore
    assert await listed_streams(server.url) == []


# ----- in-process: what is written, when ------------------------------------------------------
async def test_a_stream_that_ends_by_itself_is_forgotten_and_settings_are_kept(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], http_media: MediaProcess) -> None:
    """A clip without ``loop`` ends ("source ended"): it is not brought back. The stored spec
    is the request as given (settings included)."""
    app = make_app(source_allow_networks=("127.0.0.0/8",), rate_limit=0)
    url = await serve(aiohttp_server, app)
    store = app[DURABLE].store
    assert store is not None
    async with aiohttp.ClientSession() as http:
        body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "conf": 0.4, "classes": [0]}
        async with http.post(f"{url}/streams", json=body) as response:
            answer = await response.json()
            assert response.status == 201, answer
        [record] = await store.list_streams()
        assert record.id == answer["id"] and record.spec == {**body, "loop": False}
        await wait_for(lambda: len(app[REGISTRY]) == 0, timeout=30)  # the 2 s clip is over

        async def forgotten() -> bool:
            return not await store.list_streams()
        deadline = time.monotonic() + 10
        while not await forgotten():
            assert time.monotonic() < deadline, "an ended stream was kept"
            await asyncio.sleep(0.1)


async def test_a_streams_webhooks_are_kept_in_its_spec_and_come_back_after_a_restart(
        aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], http_media: MediaProcess) -> None:
    """The webhooks of ``POST /streams`` are in the stored spec with their secrets; a ``PATCH``
    that changes or clears them is written back (not only the ack's settings); the app
    started again on the same data dir runs the stream with them."""
    options = {"source_allow_networks": ("127.0.0.0/8",), "webhook_allow_networks": ("127.0.0.0/8",),
               "rate_limit": 0}
    app = stub_app(**options)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    store = app[DURABLE].store
    assert store is not None
    async with aiohttp.ClientSession() as http:
        body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "loop": True, "webhooks": [HOOK_A]}
        async with http.post(f"{url}/streams", json=body) as response:
            answer = await response.json()
            assert response.status == 201, answer
        stream_id = answer["id"]
        assert (await store.get_stream(stream_id)).spec["webhooks"] == [HOOK_A]  # type: ignore[union-attr]
        async with http.patch(f"{url}/sessions/{stream_id}", json={"webhooks": None}) as response:
            assert response.status == 200, await response.text()
        assert "webhooks" not in (await store.get_stream(stream_id)).spec  # type: ignore[union-attr]
        async with http.patch(f"{url}/sessions/{stream_id}", json={"webhooks": [HOOK_B, HOOK_A]}) as response:
            assert response.status == 200, await response.text()
        assert (await store.get_stream(stream_id)).spec["webhooks"] == [HOOK_B, HOOK_A]  # type: ignore[union-attr]
    await server.close()  # a graceful stop: the lease is released

    again = stub_app(**options)
    url = await serve(aiohttp_server, again)
    await wait_for(lambda: again[REGISTRY].get(stream_id) is not None, timeout=30)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/streams/{stream_id}") as response:
        restored = await response.json()
        assert response.status == 200, restored
    assert restored["webhooks"] == [{"url": HOOK_B["url"], "signed": False}, {"url": HOOK_A["url"], "signed": True}]


async def test_a_store_that_does_not_answer_is_a_503_and_nothing_runs(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], http_media: MediaProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(source_allow_networks=("127.0.0.0/8",), rate_limit=0)
    url = await serve(aiohttp_server, app)

    async def unavailable(*_args: object) -> None:
        raise StoreUnavailable("the database did not answer (test)")
    monkeypatch.setattr(app[DURABLE], "keep", unavailable)
    monkeypatch.setattr(app[DURABLE], "forget", unavailable)
    async with aiohttp.ClientSession() as http:
        body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "loop": True}
        async with http.post(f"{url}/streams", json=body) as response:
            answer = await response.json()
            assert (response.status, answer["error"]) == (503, "store_unavailable"), answer
            assert response.headers["Retry-After"] == "5"
        await wait_for(lambda: len(app[REGISTRY]) == 0, timeout=10)  # the stream opened is closed again
        async with http.delete(f"{url}/streams/whatever") as response:
            assert response.status == 503


def test_the_image_keeps_its_store_on_a_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "VOLUME [\"/data\"]" in dockerfile and "RTC_DATA_DIR=/data" in dockerfile
    assert "data/" in (ROOT / ".gitignore").read_text().split()

