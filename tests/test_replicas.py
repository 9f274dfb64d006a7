"""Replicas sharing one PostgreSQL (issue 22, the wiring): each pull stream runs on exactly one
replica, the streams spread, a replica killed with ``kill -9`` loses its streams to another
within the lease time plus a keyframe, and a graceful shutdown hands them over at once.

Real things only: three ``python -m rtc_server`` processes, a real PostgreSQL started by the
tests (``tests/postgres.py``), a real HTTP media server, SSE read off the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from .helpers import ServerProcess, wait_ready
from .postgres import Postgres, postgres  # noqa: F401 - the session fixture
from .pull_media import MediaProcess, make_clip, media_server
from .test_durable import first_detection, listed_streams

LEASE_SECONDS = 4.0


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
        try:
            listed = await listed_streams(replica.url)
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
