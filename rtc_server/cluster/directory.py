"""``Directory``: the live directory of sessions across replicas (issue 22) — every session
(``offer``, ``whip``, ``pull``) with its owner's internal URL, so that any replica can answer
for any session: forward a request to its owner, merge the listings of all replicas.

One row per session, written when it starts and when it ends (in the background: a session
never waits for the database, and a database that is away costs the directory, not the
session). Liveness is the owner's heartbeat (the lease loop's), not one write per session:
a killed replica's sessions drop out of every lookup after ``lease_seconds``.

Only in cluster mode (``RTC_INTERNAL_URL`` set): one process keeps no directory and works as
before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from rtc_server.store import SessionKind, Store, StoreError
from rtc_server.store.store import utcnow

log = logging.getLogger(__name__)

#: Source kinds as the directory names them.
KINDS: dict[str, SessionKind] = {"pull": "pull", "whip": "whip"}


class Directory:
    """See the module's docstring. ``store`` is called for the open store (None: not open)."""

    def __init__(self, store: Callable[[], Store | None], replica_id: str, internal_url: str,
                 lease_seconds: float) -> None:
        self._store = store
        self.replica_id = replica_id
        self.internal_url = internal_url.rstrip("/")
        self.lease_seconds = lease_seconds
        self._pending: set[asyncio.Task[None]] = set()
        #: One write at a time, in the order asked (FIFO): a session's end never overtakes its start.
        self._order = asyncio.Lock()
        self.stopping = False

    # ----- sessions here ---------------------------------------------------------------------------
    def opened(self, session_id: str, source_kind: str) -> None:
        kind = KINDS.get(source_kind, "offer")
        self._later(f"registering session {session_id}", lambda store: store.register_session(
            session_id, kind, self.replica_id, self.internal_url, stream_id=session_id if kind == "pull" else None))

    def closed(self, session_id: str) -> None:
        if not self.stopping:  # at shutdown the replica leaves with all its sessions at once
            self._later(f"unregistering session {session_id}", lambda store: store.unregister_session(session_id))

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the writes still in flight (shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    # ----- any session, any replica ----------------------------------------------------------------
    async def owner(self, session_id: str) -> str | None:
        """The internal URL of the live replica that owns ``session_id``, if it is another one."""
        store = self._store()
        if store is None:
            return None
        record = await store.find_session(session_id, self._alive_since())
        if record is None or record.replica_id == self.replica_id or not record.owner_url:
            return None
        return record.owner_url

    async def peers(self) -> list[str]:
        """The internal URLs of the other live replicas."""
        store = self._store()
        if store is None:
            return []
        return [r.internal_url for r in await store.live_replicas(self._alive_since())
                if r.id != self.replica_id and r.internal_url]

    def _alive_since(self) -> datetime:
        return utcnow() - timedelta(seconds=self.lease_seconds)

    def _later(self, what: str, write: Callable[[Store], Awaitable[object]]) -> None:
        store = self._store()
        if store is None:
            return

        async def run() -> None:
            try:
                async with self._order:
                    await write(store)
            except StoreError as error:
                log.warning("directory: %s failed: %s", what, error)
        task = asyncio.get_running_loop().create_task(run(), name="directory")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
