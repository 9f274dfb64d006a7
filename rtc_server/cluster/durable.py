"""``DurableStreams``: pull streams kept in the store and run under leases — what ``POST
/streams`` writes, what a restart (or another replica, after a failover) brings back with
the same id.

The composition root builds it from a ``StoreConfig`` and a ``LeaseConfig`` and hands it two
callbacks, so that the cluster knows no ingest and no HTTP:

- ``open_stream(stream_id, spec)``: run the pull stream ``spec`` (a ``POST /streams`` body as
  it was given) here under that id; a no-op if it runs here already;
- ``close_stream(stream_id, reason)``: stop it here (its lease was lost, or handed over).

Lifetime: ``open`` (start-up: the store is opened and migrated; ``StoreConfigError`` or
``StoreUnavailable`` stop the server with exit 1) → ``start`` (the lease loop:
``Leases.run``) → ``stop`` (shutdown, before the live streams are closed: no new stream is
started) → ``close`` (after they are closed: every lease is released in one transaction,
so another replica takes them at once, and the store is closed).

What is written, and when: a stream's row on ``keep`` (``POST /streams``), on
``settings_changed`` (``PATCH /sessions/{id}``) and ``forget`` (``DELETE``, or the stream ended
by itself: a file that is over, a URL now refused); the lease rows each renew interval
(``docs/store.md``). Never per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from rtc_server.store import Store, StoreConfig, StoreConflict, StoreError, open_store
from rtc_server.store.store import utcnow

from .leases import Lease, LeaseConfig, Leases

log = logging.getLogger(__name__)

OpenStream = Callable[[str, dict[str, Any]], Awaitable[None]]
CloseStream = Callable[[str, str], Awaitable[None]]

#: Seconds between two prunings of the event history.
PRUNE_INTERVAL = 3600.0


#: Deleted stream ids remembered against a lease round that raced the DELETE.
_FORGOTTEN_KEPT = 1024

#: The id prefix of streams declared by configuration (``RTC_SOURCES`` on a shared database).
DECLARED_PREFIX = "cfg-"


def declared_streams(entries: Sequence[str | Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``RTC_SOURCES`` entries (URL strings or objects) by stream id: the same on every
    replica and across restarts for the same entry (a hash of its canonical JSON), another
    for an edited one. An entry given twice is one stream."""
    declared = {}
    for entry in entries:
        spec = {"url": entry} if isinstance(entry, str) else dict(entry)
        canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        declared[DECLARED_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:16]] = spec
    return declared


class DurableStreams:
    """See the module's docstring."""

    def __init__(self, store_config: StoreConfig, lease_config: LeaseConfig, open_stream: OpenStream,
                 close_stream: CloseStream, *, event_retention: float = 0.0,
                 prune_interval: float = PRUNE_INTERVAL, clock: Callable[[], datetime] = utcnow,
                 declared: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.store_config = store_config
        #: Streams the configuration declares (``declared_streams``), written at ``open`` and
        #: then run under leases like any kept stream: on a shared database, one replica runs
        #: each, not every replica its own copy.
        self.declared = dict(declared or {})
        self.lease_config = lease_config
        self._open_stream = open_stream
        self._close_stream = close_stream
        self._event_retention = event_retention
        self._prune_interval = prune_interval
        #: The wall clock retention measures age by (a test moves it on).
        self.clock = clock
        self.store: Store | None = None
        self.leases: Leases | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Streams this replica is stopping itself (lease lost, shed, shutdown): their close
        #: is a hand-over, not an end, and they stay in the store.
        self._handing_over: set[str] = set()
        #: Streams deleted here lately (``DELETE /streams/{id}``), newest last, at most
        #: ``_FORGOTTEN_KEPT``: a lease round that read one just before its row went must not
        #: start it (or must stop it again) after the DELETE has answered.
        self._forgotten: dict[str, None] = {}
        self._stopping = False
        self._forgetting: set[asyncio.Task[None]] = set()

    # ----- lifetime ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Open (and migrate) the store; raises ``StoreConfigError`` / ``StoreUnavailable``."""
        self.store = await open_store(self.store_config)
        self.leases = Leases(self.store, self.lease_config)
        if self.declared:
            await self._declare(self.store)

    async def _declare(self, store: Store) -> None:
        """Write the declared streams (new ones, edited ones) and forget the declared streams
        the configuration no longer names, so a rollout of a new ``RTC_SOURCES`` replaces the
        old set instead of adding to it. Replicas starting together may race on a new row:
        the loser finds it written (``StoreConflict``)."""
        existing = {record.id: record for record in await store.list_streams()}
        for stream_id, spec in self.declared.items():
            record = existing.get(stream_id)
            if record is None:
                with contextlib.suppress(StoreConflict):
                    await store.create_stream(spec, stream_id)
                    log.info("sources: declared stream %s", stream_id)
            elif record.spec != spec:  # PATCHed since: the configuration wins at start
                await store.update_stream(stream_id, spec)
        for stream_id in existing:
            if stream_id.startswith(DECLARED_PREFIX) and stream_id not in self.declared:
                await store.delete_stream(stream_id)
                log.info("sources: stream %s is no longer configured; forgotten", stream_id)

    def start(self) -> None:
        """Run the lease loop (and the event retention timer) in the background."""
        self._tasks.append(asyncio.create_task(self._leases().run(self._start, self._stop), name="leases"))
        if self._event_retention > 0:
            self._tasks.append(asyncio.create_task(self._prune_events(), name="prune-events"))

    async def stop(self) -> None:
        """Shutdown, first step: end the lease loop; every stream closed from now on is a
        hand-over (it stays in the store for the next owner)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def close(self) -> None:
        """Shutdown, last step (the streams are closed): release every lease at once, close
        the store. A database away now costs the others ``lease_seconds``, nothing more."""
        await self.stop()
        if self._forgetting:
            await asyncio.wait(set(self._forgetting), timeout=self.store_config.operation_timeout_s)
        if self.store is None:
            return
        if self.leases is not None:
            try:
                released = await self.leases.release_all()
                log.info("leases: released %d stream(s) for the other replicas", len(released))
            except StoreError as error:
                log.warning("leases: could not release them (%s); they expire in %.0f s", error,
                            self.lease_config.lease_seconds)
        await self.store.close()
        self.store = None

    # ----- what the API asks -------------------------------------------------------------------
    async def keep(self, stream_id: str, spec: dict[str, Any]) -> None:
        """``POST /streams``: the stream runs here now; write it and its lease (held here).
        ``StoreUnavailable``: not kept (the caller closes the stream and answers 503)."""
        await self._leases().adopt(stream_id, spec)

    async def forget(self, stream_id: str) -> bool:
        """``DELETE /streams/{id}``, from any replica: the row goes; the owner (here or
        elsewhere) stops the stream at its next renewal. False if it was not stored."""
        self._handing_over.discard(stream_id)
        self._forgotten[stream_id] = None
        while len(self._forgotten) > _FORGOTTEN_KEPT:
            del self._forgotten[next(iter(self._forgotten))]
        return await self._leases().forget(stream_id)

    async def settings_changed(self, stream_id: str, settings: dict[str, Any]) -> None:
        """A kept stream's settings changed (``PATCH /sessions/{id}``): write them into its spec,
        so that a restart or another replica brings it back as it is now (None: the key goes)."""
        store = self._leases().store
        record = await store.get_stream(stream_id)
        if record is None:
            return
        spec = dict(record.spec)
        for key, value in settings.items():
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
        if spec != record.spec:
            await store.update_stream(stream_id, spec)

    def is_kept(self, stream_id: str) -> bool:
        """Whether this replica holds ``stream_id``'s lease."""
        return self.leases is not None and stream_id in self.leases.held

    def stream_closed(self, stream_id: str, kind: str) -> None:
        """A stream closed here. A durable one that ended by itself (a file that is over, a
        source refused for good, ``DELETE``) is forgotten, in the background; one this replica
        stopped (a lease lost or shed, shutdown) stays for its next owner."""
        if kind != "pull" or self._stopping or stream_id in self._handing_over:
            self._handing_over.discard(stream_id)
            return
        if not self.is_kept(stream_id):
            return
        task = asyncio.get_running_loop().create_task(self._forget_ended(stream_id), name="forget-stream")
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    # ----- the lease loop's callbacks ------------------------------------------------------------
    async def _start(self, lease: Lease) -> None:
        store = self._leases().store
        record = await store.get_stream(lease.stream_id)
        if record is None or lease.stream_id in self._forgotten:  # deleted meanwhile
            return
        log.info("leases: running stream %s here (epoch %d)", lease.stream_id, lease.epoch)
        self._handing_over.discard(lease.stream_id)
        await self._open_stream(lease.stream_id, dict(record.spec))
        if lease.stream_id in self._forgotten:  # deleted while it opened: the DELETE found nothing to stop
            await self._close_stream(lease.stream_id, "deleted")

    async def _stop(self, stream_id: str) -> None:
        log.info("leases: stream %s is no longer ours; stopping it here", stream_id)
        self._handing_over.add(stream_id)
        await self._close_stream(stream_id, "lease lost")

    async def _forget_ended(self, stream_id: str) -> None:
        try:
            await self._leases().forget(stream_id)
            log.info("stream %s ended; forgotten", stream_id)
        except StoreError as error:  # its owner (us) will restart it on the next start; logged
            log.warning("stream %s ended but could not be forgotten: %s", stream_id, error)

    async def prune_events(self) -> int:
        """Retention, one pass: delete the events older than ``event_retention`` (by the
        injected ``clock``); how many went. ``StoreError`` if the database did not answer."""
        pruned = await self._leases().store.prune_events(self.clock() - timedelta(seconds=self._event_retention))
        if pruned:
            log.info("events: pruned %d older than %.0f s", pruned, self._event_retention)
        return pruned

    async def _prune_events(self) -> None:
        """At start, then every ``prune_interval``: on every replica and in one process
        alike (deleting what another replica deleted already costs nothing)."""
        while True:
            try:
                await self.prune_events()
            except StoreError as error:
                log.warning("events: retention could not prune (%s); trying again in %.0f s", error,
                            self._prune_interval)
            await asyncio.sleep(self._prune_interval)

    def _leases(self) -> Leases:
        if self.leases is None:
            raise RuntimeError("the store is not open")
        return self.leases
