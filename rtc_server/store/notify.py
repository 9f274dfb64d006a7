"""Waking other replicas: PostgreSQL ``LISTEN``/``NOTIFY``, and an in-process event.

A change that another replica should act on at once (a stream added, a lease released) is
announced with ``pg_notify`` inside its transaction, so it is delivered on commit and only
then. Each replica keeps one extra connection (not from the pool) that ``LISTEN``s and sets
an ``asyncio.Event``; its lease loop waits on that event or its heartbeat interval, whichever
comes first. A lost notification costs at most one interval: the loop polls anyway.

SQLite is one process: the store sets the same event itself after its own commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

#: The channel of lease-relevant changes.
CHANNEL = "rtc_yolo_leases"


class ChangeSignal:
    """Set when something lease-relevant changed, here or (PostgreSQL) on another replica."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; True if one came (and consume it)."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Listener:
    """One ``LISTEN`` connection that sets ``signal`` on every notification, reconnecting
    with a bounded backoff while the database is away (and setting ``signal`` on reconnect:
    what was announced meanwhile is lost, so the loop should look)."""

    def __init__(self, url: URL, signal: ChangeSignal, connect_timeout_s: float) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._signal = signal
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._task: asyncio.Task[None] | None = None
        #: Set while a LISTEN connection is up; ``connections`` counts them since the start.
        self.listening = asyncio.Event()
        self.connections = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # Imported here, not at the top: only PostgreSQL needs it, and by now its engine has
        # imported it (so no stall here); an SQLite server never pays its ~0.1 s start-up import.
        import psycopg

        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=self._connect_timeout) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    self.listening.set()
                    self._signal.set()
                    delay = 0.2
                    async for _ in conn.notifies():
                        self._signal.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure: wait, reconnect
                log.debug("store listener: %s; reconnecting in %.1f s", error, delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
