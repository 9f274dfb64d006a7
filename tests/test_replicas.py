"""Replicas sharing one PostgreSQL (issue 22, the wiring): each pull stream runs on exactly one
replica, the streams spread, a replica killed with ``kill -9`` loses its streams to another
within the lease time plus a keyframe, a graceful shutdown hands them over at once, and a
full restart of every replica brings them back with the same ids.

Real things only: three ``python -m rtc_server`` processes, a real PostgreSQL started by the
tests (``tests/postgres.py``), a real HTTP media server, SSE read off the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack

from .helpers import ServerFactory, ServerProcess, cannot_run, first_detection, free_port, serve, wait_ready
from .postgres import Postgres, postgres  # noqa: F401 - the session fixture
from .pull_media import MediaProcess, make_clip, media_server

LEASE_SECONDS = 4.0
SECRET = "internal-secret-for-tests-0123456789"


@pytest.fixture
async def http_media(tmp_path: Path) -> AsyncIterator[MediaProcess]:
    make_clip(tmp_path / "bus.mp4", "mp4", seconds=2.0)
    server = media_server(tmp_path)
    await server.start()
    yield server
    await server.stop()


async def owners(replicas: list[ServerProcess]) -> dict[str, int]:
    """stream id -> index of the replica running it (each replica lists its own)."""
    found: dict[str, int] = {}
    for index, replica in enumerate(replicas):
        if replica.proc is None or replica.proc.poll() is not None:  # killed or stopped
            continue
        try:  # its own streams only (the internal hop's view; one process ignores the header)
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{replica.url}/streams", headers={"X-RTC-Internal": SECRET}) as response:
                assert response.status == 200, await response.text()
                listed = (await response.json())["streams"]
        except aiohttp.ClientConnectionError as exc:
            raise AssertionError(f"replica {index} does not answer ({exc}), exit {replica.proc.poll()}; "
                                 f"its log:\n{replica.log[-3000:]}") from exc
        for stream in listed:
            assert stream["id"] not in found, f"stream {stream['id']} runs on two replicas"
            found[stream["id"]] = index
    return found


async def wait_owners(replicas: list[ServerProcess], check: Callable[[dict[str, int]], bool],
                      timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = await owners(replicas)
        if check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"the streams did not settle: {found}")
        await asyncio.sleep(0.2)


async def test_streams_spread_fail_over_on_kill_9_and_hand_over_on_sigterm(
        spawn: Callable[..., ServerProcess], postgres: Postgres, http_media: MediaProcess,  # noqa: F811
        model_file: Path) -> None:
    url = postgres.create_database()
    env = {"RTC_MODEL": str(model_file), "RTC_DATABASE_URL": url, "RTC_LEASE_SECONDS": str(LEASE_SECONDS),
           "RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_MAX_FPS": "3", "RTC_THREADS": "1", "RTC_WORKERS": "1"}
    replicas = [spawn(env) for _ in range(3)]
    for replica in replicas:
        await wait_ready(replica.url, replica, timeout=120)

    ids = []
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # all to the first replica: it takes them, then sheds above its share
            body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "loop": True}
            async with http.post(f"{replicas[0].url}/streams", json=body) as response:
                answer = await response.json()
                assert response.status == 201, answer
                ids.append(answer["id"])
    spread = await wait_owners(replicas, lambda f: len(f) == 3 and len(set(f.values())) == 3, timeout=30)

    # kill -9 of an owner: another replica runs its stream within the lease (+ a renew
    # interval, + the source's next keyframe), detections included.
    victim_id = ids[1]
    victim = spread[victim_id]
    replicas[victim].kill()  # SIGKILL, and reaped
    killed_at = time.monotonic()
    moved = await wait_owners(replicas, lambda f: victim_id in f and len(f) == 3, timeout=LEASE_SECONDS + 20)
    assert moved[victim_id] != victim
    await first_detection(replicas[moved[victim_id]].url, victim_id)
    failover = time.monotonic() - killed_at
    print(f"failover after kill -9: {failover:.1f} s (lease {LEASE_SECONDS:g} s)")
    assert failover < LEASE_SECONDS + LEASE_SECONDS / 3 + 10, failover

    # SIGTERM: the streams are released in the same moment, not after the lease.
    leaving = next(i for i in range(3) if i != victim and replicas[i].proc is not None)
    staying = next(i for i in range(3) if i not in (victim, leaving))
    assert replicas[leaving].stop() == 0, replicas[leaving].log[-2000:]
    stopped_at = time.monotonic()
    await wait_owners(replicas, lambda f: sorted(f) == sorted(ids) and set(f.values()) == {staying},
                      timeout=LEASE_SECONDS + 20)
    handover = time.monotonic() - stopped_at
    print(f"hand-over after SIGTERM: {handover:.1f} s")
    assert handover < LEASE_SECONDS, handover
    for stream_id in ids:
        await first_detection(replicas[staying].url, stream_id)

    # A full restart: every replica down (the last one gracefully), then all up again; the
    # streams come back from PostgreSQL with the same ids, spread again, detections flowing.
    assert replicas[staying].stop() == 0, replicas[staying].log[-2000:]
    for replica in replicas:
        replica.start(wait=False)
    for replica in replicas:
        await wait_ready(replica.url, replica, timeout=120)
    back = await wait_owners(replicas, lambda f: sorted(f) == sorted(ids) and len(set(f.values())) == 3,
                             timeout=LEASE_SECONDS + 30)
    await first_detection(replicas[back[ids[0]]].url, ids[0])


# ----- any replica answers: three replicas behind a round-robin HAProxy ----------------------------
HAPROXY = "/usr/sbin/haproxy"


class Haproxy:
    """Debian's HAProxy 2.6, round-robin over ``backends`` on a free loopback port (no
    affinity: consecutive requests land on consecutive replicas)."""

    def __init__(self, folder: Path, backends: list[int]) -> None:
        if not Path(HAPROXY).exists():
            cannot_run("haproxy is not installed (Debian: apt-get install haproxy)")
        self.port = free_port()
        servers = "\n".join(f"    server r{i} 127.0.0.1:{port}" for i, port in enumerate(backends))
        self.config = folder / "haproxy.cfg"
        self.config.write_text(f"""global
    maxconn 256
defaults
    mode http
    balance roundrobin
    option http-server-close
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
frontend public
    bind 127.0.0.1:{self.port}
    default_backend replicas
backend replicas
{servers}
""")
        self.process = subprocess.Popen([HAPROXY, "-f", str(self.config), "-db"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def first_ws_detection(url: str, stream_id: str, timeout: float = 60.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http, \
            http.ws_connect(f"{url}/sessions/{stream_id}/ws") as ws:
        async for message in ws:
            assert message.type == aiohttp.WSMsgType.TEXT, message
            data = json.loads(message.data)
            if data.get("type") == "detections":
                return dict(data)
    raise AssertionError("the WebSocket closed without a detection")


async def test_any_replica_answers_for_any_session_through_a_round_robin_load_balancer(
        spawn: Callable[..., ServerProcess], postgres: Postgres, http_media: MediaProcess,  # noqa: F811
        model_file: Path, tmp_path: Path, bus_frame: np.ndarray) -> None:
    """Every listing shows every stream and session (a WebRTC ``/offer`` session among them),
    naming its replica; SSE, WebSocket and
    PATCH work for every stream on every call (each call lands on the next replica). Fails
    without the directory and forwarding: a listing shows one replica's third, and two calls
    in three reach a replica without the session (404)."""
    url = postgres.create_database()
    ports = [free_port() for _ in range(3)]
    replicas = [spawn({"RTC_MODEL": str(model_file), "RTC_DATABASE_URL": url, "RTC_LEASE_SECONDS": "4",
                       "RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_MAX_FPS": "3", "RTC_THREADS": "1",
                       "RTC_WORKERS": "1", "RTC_RATE_LIMIT": "0", "RTC_PORT": str(port),
                       "RTC_INTERNAL_URL": f"http://127.0.0.1:{port}", "RTC_INTERNAL_SECRET": SECRET})
                for port in ports]
    for replica in replicas:
        replica.port = int(replica.env["RTC_PORT"])
    for replica in replicas:
        await wait_ready(replica.url, replica, timeout=120)
    balancer = Haproxy(tmp_path, ports)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(balancer.close)
        await wait_ready(balancer.url)
        ids = []
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "loop": True}
                async with http.post(f"{balancer.url}/streams", json=body) as response:
                    answer = await response.json()
                    assert response.status == 201, answer
                    ids.append(answer["id"])
            spread = await wait_owners(replicas, lambda f: len(f) == 3 and len(set(f.values())) == 3, timeout=30)
            owner_url = {sid: f"http://127.0.0.1:{ports[i]}" for sid, i in spread.items()}
            # A WebRTC session too: its offer through the balancer, its media straight to the
            # replica that answered (loopback UDP).
            peer = DetectionClient(balancer.url, ImageTrack(bus_frame, fps=10))
            await peer.connect()
            stack.push_async_callback(peer.close)
            assert peer.session_id is not None
            await peer.next_message()

            listed = []
            for _ in range(6):  # every listing, whichever replica answers it, shows everything
                async with http.get(f"{balancer.url}/streams") as response:
                    streams = (await response.json())["streams"]
                assert {s["id"]: s["replica"] for s in streams} == owner_url, streams
                async with http.get(f"{balancer.url}/sessions") as response:
                    sessions = (await response.json())["sessions"]
                listed.append({s["id"]: s["replica"] for s in sessions})
            offer_owner = listed[0].get(peer.session_id)
            assert offer_owner in {f"http://127.0.0.1:{p}" for p in ports}, listed[0]
            assert all(seen == {**owner_url, peer.session_id: offer_owner} for seen in listed), listed
            for _ in range(3):  # the WebRTC session's settings and events from every replica
                async with http.patch(f"{balancer.url}/sessions/{peer.session_id}", json={"conf": 0.5}) as response:
                    assert response.status == 200, await response.text()
                await first_detection(balancer.url, peer.session_id)

            for stream_id in ids:
                for call in range(3):  # three calls: one on each replica
                    await first_detection(balancer.url, stream_id)
                    await first_ws_detection(balancer.url, stream_id)
                    conf = 0.3 + call / 10
                    async with http.patch(f"{balancer.url}/sessions/{stream_id}", json={"conf": conf}) as response:
                        ack = await response.json()
                        assert response.status == 200, ack
                        assert ack["conf"] == pytest.approx(conf), ack

            # The internal hop: a wrong secret is refused; the right one gets one replica's own view.
            async with http.get(f"{replicas[0].url}/streams", headers={"X-RTC-Internal": "not-the-secret"}) as r:
                assert r.status == 403
            async with http.get(f"{replicas[0].url}/streams", headers={"X-RTC-Internal": SECRET}) as r:
                assert [s["id"] for s in (await r.json())["streams"]] == [s for s, i in spread.items() if i == 0]


# ----- the database down later -----------------------------------------------------------------------
async def test_with_the_database_down_live_streams_go_on_writes_get_503_and_the_server_reconnects(
        spawn: Callable[..., ServerProcess], postgres: Postgres, http_media: MediaProcess,  # noqa: F811
        model_file: Path) -> None:
    """``pg_ctl stop`` under a running server: its stream goes on (detections on SSE), ``POST
    /streams`` answers 503 with ``Retry-After``; ``pg_ctl start``: the same process writes
    again, by itself. Fails if a write is not mapped (a 500), or if the server never reconnects."""
    url = postgres.create_database()
    server = spawn({"RTC_MODEL": str(model_file), "RTC_DATABASE_URL": url, "RTC_LEASE_SECONDS": "30",
                    "RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_MAX_FPS": "3", "RTC_RATE_LIMIT": "0"})
    await wait_ready(server.url, server, timeout=120)
    body = {"url": f"http://127.0.0.1:{http_media.port}/bus.mp4", "loop": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/streams", json=body) as response:
            assert response.status == 201, await response.text()
            live = (await response.json())["id"]
        postgres.stop()
        try:
            started = time.monotonic()
            async with http.post(f"{server.url}/streams", json=body) as response:
                answer = await response.json()
                assert (response.status, answer["error"]) == (503, "store_unavailable"), answer
                assert int(response.headers["Retry-After"]) > 0
            print(f"POST /streams with the database down: 503 in {time.monotonic() - started:.1f} s")
            await first_detection(server.url, live)  # the live stream goes on
        finally:
            postgres.start()
        deadline = time.monotonic() + 30
        while True:  # the same process writes again once the database is back
            async with http.post(f"{server.url}/streams", json=body) as response:
                if response.status == 201:
                    again = (await response.json())["id"]
                    break
                assert response.status == 503, await response.text()
            assert time.monotonic() < deadline, "the server did not reconnect to the database"
            await asyncio.sleep(0.5)
        assert {live, again} <= {s["id"] for s in await owned(server)}
        assert server.stop() == 0


async def owned(server: ServerProcess) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/streams") as response:
        return list((await response.json())["streams"])


# ----- the internal hop, in one process ----------------------------------------------------------------
async def test_the_internal_hop_needs_the_secret_and_carries_the_real_client(
        aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]) -> None:
    """A wrong secret is refused (403). With the right one, the owner's per-client rate limit
    sees the client the first hop named (X-RTC-Client), not the forwarding replica; without
    it, that header is not believed. Fails if the owner trusted X-RTC-Client from anyone, or
    rate-limited every forwarded request as one client."""
    app = make_app(internal_url="http://127.0.0.1:9", internal_secret=SECRET, rate_limit=0.001, rate_burst=1)
    url = await serve(aiohttp_server, app)

    async def status(**headers: str) -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/sessions", headers=headers) as response:
            return response.status

    assert await status(**{"X-RTC-Internal": "wrong-secret"}) == 403
    hop = {"X-RTC-Internal": SECRET}
    assert await status(**hop, **{"X-RTC-Client": "198.51.100.1"}) == 200
    assert await status(**hop, **{"X-RTC-Client": "198.51.100.1"}) == 429  # that client's bucket
    assert await status(**hop, **{"X-RTC-Client": "198.51.100.2"}) == 200  # another client's
    assert await status(**{"X-RTC-Client": "198.51.100.3"}) == 200  # no secret: the TCP peer's bucket
    assert await status(**{"X-RTC-Client": "198.51.100.4"}) == 429  # ... the same one: not believed


# ----- RTC_SOURCES on a shared database: declared once, run once -------------------------------------
async def test_configured_sources_run_on_one_replica_and_follow_the_configuration(
        spawn: Callable[..., ServerProcess], postgres: Postgres, http_media: MediaProcess,  # noqa: F811
        model_file: Path) -> None:
    """Two replicas with the same ``RTC_SOURCES`` pull each source once (not once each), under
    an id they agree on; a ``kill -9`` of its owner moves it; a replica that starts with an
    edited ``RTC_SOURCES`` replaces the old set for all of them."""
    clip = f"http://127.0.0.1:{http_media.port}/bus.mp4"
    env = {"RTC_MODEL": str(model_file), "RTC_DATABASE_URL": postgres.create_database(),
           "RTC_LEASE_SECONDS": str(LEASE_SECONDS), "RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_MAX_FPS": "3",
           "RTC_THREADS": "1", "RTC_WORKERS": "1", "RTC_SOURCES": json.dumps([{"url": clip, "loop": True}])}
    replicas = [spawn(env) for _ in range(2)]
    for replica in replicas:
        await wait_ready(replica.url, replica, timeout=120)

    found = await wait_owners(replicas, lambda f: len(f) == 1, timeout=30)  # never on both: owners() checks
    [(stream_id, owner)] = found.items()
    assert stream_id.startswith("cfg-"), stream_id
    await asyncio.sleep(LEASE_SECONDS)  # a few lease rounds later, still one copy
    assert await owners(replicas) == found
    await first_detection(replicas[owner].url, stream_id)

    replicas[owner].kill()
    await wait_owners(replicas, lambda f: f == {stream_id: 1 - owner}, timeout=LEASE_SECONDS + 20)

    # The killed replica comes back with another RTC_SOURCES: the old stream goes everywhere
    # (the survivor stops it at its next renewal), the new one runs once, on either.
    replicas[owner].start(wait=False, RTC_SOURCES=json.dumps([{"url": clip, "loop": True, "conf": 0.4}]))
    await wait_ready(replicas[owner].url, replicas[owner], timeout=120)
    moved = await wait_owners(replicas, lambda f: len(f) == 1 and stream_id not in f, timeout=LEASE_SECONDS + 20)
    [(new_id, new_owner)] = moved.items()
    assert new_id.startswith("cfg-")
    await first_detection(replicas[new_owner].url, new_id)
