"""Leases on pull streams against real databases (SQLite and the tests' PostgreSQL 15): replicas
share streams evenly within their capacities, a silent replica loses its streams after the
lease time, a graceful exit hands them over at once, NOTIFY wakes a waiting replica, and two
replicas acquiring at the same moment never take the same stream (FOR UPDATE SKIP LOCKED).

Time is a controllable clock shared by the "replicas" (Store objects with their own ids and
connections), so expiry is tested without sleeping through a lease."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from rtc_server.cluster import Lease, LeaseConfig, Leases, fair_quota
from rtc_server.store import Store, StoreConfig, StoreUnavailable, open_store, schema

from .helpers import ROOT
from .postgres import Postgres, postgres  # noqa: F401 - the session fixture

LEASE = 15.0


class Clock:
    """The replicas' shared clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return StoreConfig.for_data_dir(tmp_path / "data").url
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database()


Replica = Callable[..., Awaitable[Leases]]


@pytest.fixture
async def replica(db_url: str) -> AsyncIterator[Replica]:
    """``await replica("a", capacity=5)``: a replica with its own store (own connections)."""
    stores: list[Store] = []
    clock = Clock()

    async def make(replica_id: str, capacity: int = 100, lease_seconds: float = LEASE) -> Leases:
        store = await open_store(StoreConfig(db_url))
        stores.append(store)
        return Leases(store, LeaseConfig(replica_id, capacity, lease_seconds, f"http://{replica_id}:8081"),
                      clock=clock)

    make.clock = clock  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for store in stores:
            await store.close()


async def _streams(leases: Leases, n: int) -> list[str]:
    return [(await leases.store.create_stream({"source": f"rtsp://camera/{i}"}, stream_id=f"s{i:02d}")).id
            for i in range(n)]


async def _owners(store: Store) -> dict[str, str | None]:
    async def work(connection: AsyncConnection) -> dict[str, str | None]:
        rows = (await connection.execute(select(schema.leases.c.stream_id, schema.leases.c.owner))).all()
        return {row.stream_id: row.owner for row in rows}
    return await store.run("test", work)


# ----- the fair share --------------------------------------------------------------------------------
@pytest.mark.parametrize("total, capacities, expected", [
    (9, {"a": 100, "b": 100, "c": 100}, {"a": 3, "b": 3, "c": 3}),
    (10, {"a": 100, "b": 100, "c": 100}, {"a": 4, "b": 4, "c": 4}),  # rounded up: all placed
    (6, {"a": 1, "b": 10}, {"a": 1, "b": 5}),  # a small replica's share goes to the others
    (20, {"a": 2, "b": 3}, {"a": 2, "b": 3}),  # more streams than capacity: everyone full
    (0, {"a": 5}, {"a": 0}),
    (5, {"a": 0, "b": 5}, {"a": 0, "b": 5}),
])
def test_fair_quota_fills_evenly_within_capacities(total: int, capacities: dict[str, int],
                                                   expected: dict[str, int]) -> None:
    assert {r: fair_quota(total, capacities, r) for r in capacities} == expected


# ----- sharing ---------------------------------------------------------------------------------------
async def test_three_replicas_share_streams_evenly(replica: Replica) -> None:
    a, b, c = [await replica(r) for r in ("a", "b", "c")]
    await _streams(a, 9)
    for r in (a, b, c):
        await r.heartbeat()
    for r in (a, b, c):
        await r.tick()
    assert sorted(len(r.held) for r in (a, b, c)) == [3, 3, 3]
    owners = await _owners(a.store)
    assert all(owners.values()) and len(set(owners)) == 9
    for r in (a, b, c):
        assert {sid for sid, owner in owners.items() if owner == r.config.replica_id} == set(r.held)
    # Another round changes nothing: renewals keep every stream where it is.
    a.clock.advance(5)  # type: ignore[attr-defined]
    for r in (a, b, c):
        changes = await r.tick()
        assert changes.acquired == [] and changes.lost == []
    assert await _owners(a.store) == owners


async def test_capacity_is_never_exceeded(replica: Replica) -> None:
    small, big = await replica("small", capacity=1), await replica("big", capacity=4)
    await _streams(small, 8)
    for r in (small, big):
        await r.heartbeat()
    for _ in range(2):
        for r in (small, big):
            await r.tick()
    assert (len(small.held), len(big.held)) == (1, 4)
    assert list((await _owners(small.store)).values()).count(None) == 3  # no room for the rest


async def test_a_joining_replica_gets_its_share_from_a_busy_one(replica: Replica) -> None:
    a = await replica("a")
    await _streams(a, 6)
    await a.tick()
    assert len(a.held) == 6  # alone: everything
    b = await replica("b")
    await b.heartbeat()
    excess = await a.excess()
    assert len(excess) == 3
    await a.release(excess)  # (after stopping them)
    assert len(a.held) == 3
    await b.tick()
    assert set(b.held) == set(excess)


# ----- failover ----------------------------------------------------------------------------------------
async def test_a_silent_replica_loses_its_streams_after_the_lease_time(replica: Replica) -> None:
    a, b = await replica("a"), await replica("b")
    await _streams(a, 4)
    await a.heartbeat()
    await b.heartbeat()
    await a.tick()
    await b.tick()
    assert (len(a.held), len(b.held)) == (2, 2)
    epochs = {lease.stream_id: lease.epoch for lease in a.held.values()}

    # a is killed (kill -9): no renewal, no release. Within the lease b takes nothing.
    a.clock.advance(LEASE - 1)  # type: ignore[attr-defined]
    assert (await b.tick()).acquired == []
    a.clock.advance(2)  # type: ignore[attr-defined]
    taken = (await b.tick()).acquired
    assert {lease.stream_id for lease in taken} == set(epochs)
    assert all(lease.epoch == epochs[lease.stream_id] + 1 for lease in taken)  # a fencing token
    assert len(b.held) == 4

    # a comes back (a frozen VM resuming): its leases are lost, and its own clock says so too.
    held = dict(a.held)
    assert set(a.expired_locally()) == set(epochs) and a.held == {}
    a.held = held
    assert set((await a.renew()).lost) == set(epochs)
    assert a.held == {}


async def test_graceful_shutdown_hands_the_streams_over_at_once(replica: Replica) -> None:
    a, b = await replica("a"), await replica("b")
    await _streams(a, 4)
    for r in (a, b):
        await r.heartbeat()
    for r in (a, b):
        await r.tick()
    await a.store.register_session("a-offer", "offer", "a", a.config.internal_url)
    released = await a.release_all()
    assert len(released) == 2 and a.held == {}
    # No clock change: b takes them now, and a is gone from the directory.
    await b.tick()
    assert len(b.held) == 4
    assert [r.id for r in await b.store.live_replicas(b.clock() - timedelta(seconds=LEASE))] == ["b"]
    assert await b.store.count("sessions") == 0


async def test_a_deleted_stream_is_lost_to_its_owner(replica: Replica) -> None:
    a = await replica("a")
    ids = await _streams(a, 2)
    await a.tick()
    await a.store.delete_stream(ids[0])
    assert (await a.renew()).lost == [ids[0]]


async def test_the_loop_starts_and_stops_streams(replica: Replica) -> None:
    """``run``: the root's view — start what we acquire (a start that fails is tried again
    next round); a deleted stream is stopped."""
    a = await replica("a", lease_seconds=1.5)  # rounds every 0.5 s; the test clock stands still
    ids = await _streams(a, 3)
    running: set[str] = set()
    failures = {ids[2]: 1}
    changed = asyncio.Event()

    async def start(lease: Lease) -> None:
        if failures.get(lease.stream_id):
            failures[lease.stream_id] -= 1
            raise RuntimeError("the source did not open")
        running.add(lease.stream_id)
        changed.set()

    async def stop(stream_id: str) -> None:
        running.discard(stream_id)
        changed.set()

    task = asyncio.create_task(a.run(start, stop))
    try:
        async with asyncio.timeout(20):
            while running != set(ids):
                changed.clear()
                await changed.wait()
            assert failures[ids[2]] == 0
            await a.store.delete_stream(ids[1])
            while running != {ids[0], ids[2]}:
                changed.clear()
                await changed.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ----- PostgreSQL only: row locks and NOTIFY ------------------------------------------------------------
@pytest.fixture
def pg_url(postgres: Postgres) -> str:  # noqa: F811
    return postgres.create_database()


async def test_replicas_acquiring_together_never_take_the_same_stream(pg_url: str) -> None:
    clock = Clock()
    stores = [await open_store(StoreConfig(pg_url)) for _ in range(4)]
    try:
        replicas = [Leases(s, LeaseConfig(f"r{i}", capacity=100), clock=clock) for i, s in enumerate(stores)]
        await stores[0].create_stream({}, stream_id="seed")
        for i in range(1, 40):
            await stores[0].create_stream({}, stream_id=f"s{i:02d}")
        for r in replicas:
            await r.heartbeat()
        results = await asyncio.gather(*(r.acquire() for r in replicas))
        taken = [lease.stream_id for leases in results for lease in leases]
        assert len(taken) == len(set(taken)) == 40  # every stream once, none twice
        assert all(len(leases) == 10 for leases in results)
    finally:
        for s in stores:
            await s.close()


async def test_notify_wakes_a_waiting_replica(pg_url: str) -> None:
    a, b = await open_store(StoreConfig(pg_url)), await open_store(StoreConfig(pg_url))
    try:
        assert b.listener is not None
        async with asyncio.timeout(10):
            await b.listener.listening.wait()
        await b.changes.wait(0)  # consume the wake-up of the first LISTEN

        # A stream added on replica a wakes replica b well before its next poll.
        started = time.monotonic()
        waiter = asyncio.create_task(b.changes.wait(30))
        await asyncio.sleep(0.05)
        await a.create_stream({"source": "rtsp://camera/1"}, stream_id="cam")
        assert await waiter and time.monotonic() - started < 5

        # So does a graceful exit releasing its leases.
        leases = Leases(a, LeaseConfig("a", capacity=4))
        await leases.tick()
        await b.changes.wait(0)
        waiter = asyncio.create_task(b.changes.wait(30))
        await asyncio.sleep(0.05)
        await leases.release_all()
        assert await waiter
    finally:
        await a.close()
        await b.close()


async def test_the_listener_comes_back_after_the_database_restarts(postgres: Postgres) -> None:  # noqa: F811
    url = postgres.create_database()
    a, b = await open_store(StoreConfig(url)), await open_store(StoreConfig(url))
    try:
        assert b.listener is not None
        async with asyncio.timeout(10):
            await b.listener.listening.wait()
        postgres.stop()
        postgres.start()
        async with asyncio.timeout(20):
            while b.listener.connections < 2:  # it noticed, and listens on a new connection
                await asyncio.sleep(0.1)
        await b.changes.wait(0)
        waiter = asyncio.create_task(b.changes.wait(30))
        await asyncio.sleep(0.05)
        for _ in range(50):  # the pool's first use after the restart reconnects
            try:
                await a.create_stream({}, stream_id="after")
                break
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        assert await waiter
    finally:
        await a.close()
        await b.close()


#: A replica in its own process: takes its leases, says so, then keeps renewing until killed.
_REPLICA = """
import asyncio, sys
from rtc_server.cluster import LeaseConfig, Leases
from rtc_server.store import StoreConfig, open_store

async def main():
    store = await open_store(StoreConfig(sys.argv[1]))
    leases = Leases(store, LeaseConfig("doomed", capacity=10, lease_seconds=float(sys.argv[2])))
    await leases.tick()
    print(" ".join(sorted(leases.held)), flush=True)
    while True:
        await asyncio.sleep(leases.config.renew_interval)
        await leases.tick()

asyncio.run(main())
"""


async def test_a_replica_killed_with_sigkill_loses_its_streams_within_the_lease(pg_url: str) -> None:
    """Real time, a real process: ``kill -9`` of a lease holder (no release, its connections
    cut); another replica takes every stream once the lease has run out, and not before."""
    lease = 2.0
    store = await open_store(StoreConfig(pg_url))
    try:
        ids = [(await store.create_stream({}, stream_id=f"s{i}")).id for i in range(3)]
        doomed = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _REPLICA, pg_url, str(lease), stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert doomed.stdout is not None
            line = await asyncio.wait_for(doomed.stdout.readline(), 60)
            assert line.decode().split() == ids
            survivor = Leases(store, LeaseConfig("survivor", capacity=10, lease_seconds=lease))
            assert await survivor.acquire() == []  # held and renewed by the other process
            doomed.send_signal(signal.SIGKILL)
            killed = time.monotonic()
        finally:
            if doomed.returncode is None:
                doomed.kill()
            await doomed.wait()
        while len(survivor.held) < 3:
            assert time.monotonic() - killed < lease + 5, "the killed replica's leases never expired"
            await survivor.acquire()
            await asyncio.sleep(0.1)
        assert time.monotonic() - killed <= lease + 1.5
        assert sorted(survivor.held) == ids
    finally:
        await store.close()
