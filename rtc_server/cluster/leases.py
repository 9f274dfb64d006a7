"""Leases: each pull stream runs on exactly one replica, which holds its lease and renews it.

Why here and not in the store: the store keeps rows; who runs what is a protocol between
replicas (fair shares, handing over, waking each other), and it is the cluster's. The
protocol uses only the database's own primitives, no consensus of ours:

- ``acquire``: in one transaction, count the live replicas (heartbeats younger than the lease
  time) and their capacities, work out this replica's fair quota, and take that many free or
  expired leases with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL: two replicas never lock
  the same row, and neither waits for the other). SQLite is one writer (``BEGIN IMMEDIATE``):
  the transaction itself is the lock.
- ``renew``: push ``expires_at`` forward on every lease this replica still owns; a lease that is
  no longer ours (taken after we went silent, or its stream deleted) is reported lost, and
  the caller stops that stream.
- ``excess`` / ``release``: when more replicas are alive than when we took our streams, we own
  more than our quota; the caller stops those streams, then releases them, and ``NOTIFY``
  wakes the others to take them.
- ``release_all``: a graceful shutdown leaves the directory and frees every lease at once.
- A replica that stops heartbeating (``kill -9``, a frozen VM) keeps its rows, but after
  ``lease_seconds`` they are expired, and the next ``acquire`` of any other replica takes them.
  Each change of hands bumps the lease's ``epoch``: a fencing token for whatever the old
  owner might still write.

Time comes from ``clock`` (this process's UTC clock by default; tests pass a controllable
one): the replicas' clocks must agree to well within ``lease_seconds`` (NTP does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rtc_server.store import Store, StoreUnavailable, schema

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaseConfig:
    """This replica in the lease protocol (the root fills it from ``RTC_LEASE_SECONDS``,
    ``RTC_INTERNAL_URL``, the stream cap)."""

    #: Unique per live replica (a pod name, a host:port); a restart with the same id takes
    #: its own unexpired leases back at once.
    replica_id: str
    #: The most pull streams this replica runs.
    capacity: int
    #: How long a lease lives without renewal: the failover time of a killed owner.
    lease_seconds: float = 15.0
    #: Where the other replicas reach this one (forwarding); None for one process.
    internal_url: str | None = None

    @property
    def renew_interval(self) -> float:
        """Renew three times per lease: two renewals may fail before the lease runs out."""
        return self.lease_seconds / 3


@dataclass(frozen=True)
class Lease:
    """A lease this replica holds: run ``stream_id`` until ``expires_at`` unless renewed."""

    stream_id: str
    epoch: int
    expires_at: datetime


@dataclass
class LeaseChanges:
    """What one ``tick`` changed: streams to start, streams to stop."""

    acquired: list[Lease] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


def fair_quota(total: int, capacities: dict[str, int], replica_id: str) -> int:
    """How many of ``total`` streams ``replica_id`` should run, among the live replicas'
    ``capacities``: water-filling — every replica gets the same level L, capped by its own
    capacity, with L the smallest level that places every stream (or each replica's capacity,
    if all of them together cannot). Rounded up, so the quotas always cover ``total``."""
    if total <= 0 or capacities.get(replica_id, 0) <= 0:
        return 0
    caps = [max(0, c) for c in capacities.values()]
    low, high = 0, max(caps)
    while low < high:
        level = (low + high) // 2
        if sum(min(c, level) for c in caps) >= total:
            high = level
        else:
            low = level + 1
    return min(capacities[replica_id], low)


class Leases:
    """The lease protocol for one replica on one ``Store``."""

    def __init__(self, store: Store, config: LeaseConfig, clock: Clock = wall_clock) -> None:
        if config.capacity < 0 or config.lease_seconds <= 0:
            raise ValueError("capacity must be >= 0 and lease_seconds > 0")
        self.store = store
        self.config = config
        self.clock = clock
        #: The leases this replica believes it holds.
        self.held: dict[str, Lease] = {}
        #: Held through each round of ``run`` and by ``adopt``/``forget``, so a stream created
        #: here while a renewal is in flight is never taken for lost.
        self.lock = asyncio.Lock()

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.config.lease_seconds)

    # ----- one step of the protocol --------------------------------------------------------------
    async def heartbeat(self) -> None:
        """Say this replica is alive (it counts in everyone's fair share)."""
        c = self.config
        await self.store.heartbeat_replica(c.replica_id, c.internal_url, c.capacity, now=self.clock())

    async def renew(self) -> LeaseChanges:
        """Extend every lease still ours. Lost: held here but no longer ours (stop them).
        Acquired: ours in the database but not held here (a restart with the same id, or an
        ``acquire`` that committed after this replica had given up waiting for it)."""
        now = self.clock()
        leases = schema.leases

        async def work(connection: AsyncConnection) -> list[Lease]:
            rows = (await connection.execute(
                update(leases).where(leases.c.owner == self.config.replica_id)
                .values(expires_at=now + self._lease)
                .returning(leases.c.stream_id, leases.c.epoch, leases.c.expires_at))).all()
            return [Lease(row.stream_id, row.epoch, row.expires_at) for row in rows]
        mine = {lease.stream_id: lease for lease in await self.store.run("renewing leases", work)}
        changes = LeaseChanges(acquired=[lease for sid, lease in mine.items() if sid not in self.held],
                               lost=[sid for sid in self.held if sid not in mine])
        self.held = mine
        return changes

    async def acquire(self) -> list[Lease]:
        """Take free or expired leases up to this replica's fair quota; returns the new ones."""
        now = self.clock()
        leases = schema.leases

        async def work(connection: AsyncConnection) -> list[Lease]:
            need = await self._quota(connection, now) - await self._owned(connection, now)
            if need <= 0:
                return []
            free = (await connection.execute(
                select(leases.c.stream_id)
                .where(or_(leases.c.owner.is_(None), leases.c.expires_at < now))
                .order_by(leases.c.stream_id).limit(need)
                .with_for_update(skip_locked=True))).scalars().all()
            if not free:
                return []
            rows = (await connection.execute(
                update(leases).where(leases.c.stream_id.in_(free))
                .values(owner=self.config.replica_id, expires_at=now + self._lease, epoch=leases.c.epoch + 1)
                .returning(leases.c.stream_id, leases.c.epoch, leases.c.expires_at))).all()
            return [Lease(row.stream_id, row.epoch, row.expires_at) for row in rows]
        taken = await self.store.run("acquiring leases", work)
        self.held.update({lease.stream_id: lease for lease in taken})
        if taken:
            log.info("leases: %s took %s", self.config.replica_id, [lease.stream_id for lease in taken])
        return taken

    async def excess(self) -> list[str]:
        """Streams held above this replica's fair quota (more replicas are alive now): the
        caller stops them, then ``release``s them."""
        now = self.clock()

        async def work(connection: AsyncConnection) -> list[str]:
            quota = await self._quota(connection, now)
            mine = (await connection.execute(
                select(schema.leases.c.stream_id).where(self._live_mine(now))
                .order_by(schema.leases.c.stream_id.desc()))).scalars().all()
            return list(mine[:max(0, len(mine) - quota)])
        return await self.store.run("counting leases", work)

    async def release(self, stream_ids: Sequence[str]) -> None:
        """Free these leases now and wake the other replicas to take them."""
        if not stream_ids:
            return
        leases = schema.leases

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                update(leases).where(and_(leases.c.owner == self.config.replica_id,
                                          leases.c.stream_id.in_(list(stream_ids))))
                .values(owner=None, expires_at=None))
            await self.store.announce(connection, f"released {len(stream_ids)}")
        await self.store.run("releasing leases", work)
        for stream_id in stream_ids:
            self.held.pop(stream_id, None)

    async def release_all(self) -> list[str]:
        """A graceful shutdown: leave the directory and free every lease in one transaction,
        so the others take the streams over at once instead of after ``lease_seconds``."""
        c, leases = self.config, schema.leases

        async def work(connection: AsyncConnection) -> list[str]:
            released = (await connection.execute(
                update(leases).where(leases.c.owner == c.replica_id)
                .values(owner=None, expires_at=None).returning(leases.c.stream_id))).scalars().all()
            await connection.execute(delete(schema.sessions).where(schema.sessions.c.replica_id == c.replica_id))
            await connection.execute(delete(schema.replicas).where(schema.replicas.c.id == c.replica_id))
            await self.store.announce(connection, f"replica {c.replica_id} left")
            return list(released)
        released = await self.store.run("releasing all leases", work)
        self.held.clear()
        return released

    async def adopt(self, stream_id: str, spec: dict[str, Any]) -> Lease:
        """Keep a new pull stream that already runs here (``POST /streams``): its row and its
        lease, owned by this replica, in one transaction. If this replica is above its fair
        share, the next round sheds it like any other (stopped here, then taken elsewhere)."""
        now = self.clock()
        lease = Lease(stream_id, 1, now + self._lease)

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(insert(schema.streams).values(
                id=stream_id, spec=spec, created_at=now, updated_at=now))
            await connection.execute(insert(schema.leases).values(
                stream_id=stream_id, owner=self.config.replica_id, expires_at=lease.expires_at, epoch=lease.epoch))
            await self.store.announce(connection, f"stream {stream_id}")
        async with self.lock:
            await self.store.run("keeping a stream", work)
            self.held[stream_id] = lease
        return lease

    async def forget(self, stream_id: str) -> bool:
        """Delete a stream (``DELETE /streams/{id}`` on any replica): its row, its lease; its
        owner's next renewal finds it gone and stops it. False if there was none."""
        async with self.lock:
            existed = await self.store.delete_stream(stream_id)
            self.held.pop(stream_id, None)
        return existed

    def expired_locally(self) -> list[str]:
        """Held leases whose time ran out by this replica's clock (the database was away and
        renewals failed): the caller must stop these streams, another replica may run them."""
        now = self.clock()
        gone = [sid for sid, lease in self.held.items() if lease.expires_at <= now]
        for sid in gone:
            del self.held[sid]
        return gone

    async def tick(self) -> LeaseChanges:
        """One round: heartbeat, renew, take up to the quota."""
        await self.heartbeat()
        changes = await self.renew()
        changes.acquired += await self.acquire()
        return changes

    # ----- the loop ------------------------------------------------------------------------------
    async def run(self, start: Callable[[Lease], Awaitable[None]],
                  stop: Callable[[str], Awaitable[None]]) -> None:
        """Run the protocol until cancelled: ``start``/``stop`` the streams as leases come and
        go; wake early on a change anywhere (NOTIFY). With the database away, streams go on
        until their leases run out here, then stop (another replica may have them by then).
        A ``start`` that raises is logged and tried again next round while the lease is held."""
        unstarted: dict[str, Lease] = {}
        while True:
            async with self.lock:
                await self._round(start, stop, unstarted)
            await self.store.changes.wait(self.config.renew_interval)

    async def _round(self, start: Callable[[Lease], Awaitable[None]], stop: Callable[[str], Awaitable[None]],
                     unstarted: dict[str, Lease]) -> None:
        """One round of ``run``, under ``lock``."""
        try:
            changes = await self.tick()
            for stream_id in changes.lost:
                if unstarted.pop(stream_id, None) is None:
                    await _quietly(stop, stream_id)
            shed = await self.excess()
            for stream_id in shed:
                if unstarted.pop(stream_id, None) is None:
                    await _quietly(stop, stream_id)
            await self.release(shed)
            unstarted.update({lease.stream_id: lease for lease in changes.acquired})
            for stream_id, lease in list(unstarted.items()):
                if stream_id in self.held and await _quietly(start, lease):
                    del unstarted[stream_id]
        except StoreUnavailable as error:
            log.warning("leases: %s", error)
            for stream_id in self.expired_locally():
                if unstarted.pop(stream_id, None) is None:
                    await _quietly(stop, stream_id)

    # ----- shares ----------------------------------------------------------------------------------
    def _live_mine(self, now: datetime) -> ColumnElement[bool]:
        leases = schema.leases
        return and_(leases.c.owner == self.config.replica_id, leases.c.expires_at >= now)

    async def _owned(self, connection: AsyncConnection, now: datetime) -> int:
        return int((await connection.execute(
            select(func.count()).select_from(schema.leases).where(self._live_mine(now)))).scalar_one())

    async def _quota(self, connection: AsyncConnection, now: datetime) -> int:
        """This replica's fair quota among the replicas alive now (itself always counted)."""
        replicas = schema.replicas
        total = int((await connection.execute(select(func.count()).select_from(schema.leases))).scalar_one())
        rows = (await connection.execute(select(replicas.c.id, replicas.c.capacity).where(
            replicas.c.heartbeat_at >= now - self._lease))).all()
        capacities = {row.id: int(row.capacity) for row in rows}
        capacities[self.config.replica_id] = self.config.capacity
        return fair_quota(total, capacities, self.config.replica_id)


async def _quietly(callback: Callable[[T], Awaitable[None]], argument: T) -> bool:
    """A failing start/stop is logged, not fatal to the loop: the other streams' leases must
    still be renewed. False if it raised."""
    try:
        await callback(argument)
    except Exception:
        log.exception("leases: %s(%s) failed", getattr(callback, "__name__", "callback"), argument)
        return False
    return True


async def wait_for_change(store: Store, timeout: float) -> bool:
    """Wait up to ``timeout`` for a lease-relevant change anywhere (NOTIFY) or here."""
    return await store.changes.wait(timeout)


__all__ = ["Lease", "LeaseChanges", "LeaseConfig", "Leases", "fair_quota", "wait_for_change"]
