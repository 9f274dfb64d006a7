"""``FrameMailbox``: a one-slot, newest-wins hand-over from the frame reader to the model.

aiortc decodes every received frame into an unbounded queue on the track. If the consumer
is slower than the camera, that queue grows and latency with it (aiortc issues 642, 1192).
The session's reader drains the track at decode speed into this mailbox; each ``put``
overwrites what has not been taken yet and counts it as dropped, so whoever takes gets the
newest frame and latency cannot build up, however slow the detector. A stream's frames are
taken by the scheduler at dispatch time (``peek``/``take``, never waiting); ``get`` waits.

``put`` may come from any thread: a pull source's reader thread puts its decoded frames
straight into its stream's mailbox, so a pulled frame passes one newest-wins slot, not a
slot of the source's and then this one, and there is one drop count. The slot and the
counts are guarded by a lock (held for a few assignments); a ``get`` waiting on the event
loop is woken through the loop when the put came from another thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class MailboxClosed(Exception):
    """``get`` on a mailbox that was closed (the session is ending)."""


class FrameMailbox(Generic[T]):
    def __init__(self) -> None:
        self._item: T | None = None
        self._lock = threading.Lock()
        self._event = asyncio.Event()
        #: The loop a ``get`` waits on, if one does (its event must be set from that loop).
        self._waiting_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``, replacing any item not yet taken; True if one was dropped.
        Safe from any thread."""
        with self._lock:
            if self._closed:
                return False
            self.received += 1
            dropped = self._item is not None
            if dropped:
                self.dropped += 1
            self._item = item
        self._wake()
        return dropped

    def peek(self) -> T | None:
        """The newest item not yet taken, left in place (None: nothing new)."""
        return self._item

    def take(self) -> T | None:
        """Take the newest item now, if there is one."""
        with self._lock:
            item, self._item = self._item, None
        return item

    async def get(self) -> T:
        """Wait for and take the newest item (on one event loop)."""
        self._waiting_loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                item, self._item = self._item, None
                if item is None:
                    if self._closed:
                        raise MailboxClosed
                    self._event.clear()
            if item is not None:
                return item
            await self._event.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._item = None
        self._wake()

    def _wake(self) -> None:
        """Set the event for a waiting ``get``: directly on its loop, else through it."""
        loop = self._waiting_loop
        if loop is None:
            return  # nobody has ever waited: nothing to wake
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._event.set()
        else:
            try:
                loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass
