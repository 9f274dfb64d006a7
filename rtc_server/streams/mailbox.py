"""``FrameMailbox``: a one-slot, newest-wins hand-over from the frame reader to the model.

aiortc decodes every received frame into an unbounded queue on the track. If the consumer
is slower than the camera, that queue grows and latency with it (aiortc issues 642, 1192).
The session's reader drains the track at decode speed into this mailbox; each ``put``
overwrites what has not been taken yet and counts it as dropped, so whoever takes gets the
newest frame and latency cannot build up, however slow the detector. A stream's frames are
taken by the scheduler at dispatch time (``peek``/``take``, never waiting); ``get`` waits.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class MailboxClosed(Exception):
    """``get`` on a mailbox that was closed (the session is ending)."""


class FrameMailbox(Generic[T]):
    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``, replacing any item not yet taken; True if one was dropped."""
        if self._closed:
            return False
        self.received += 1
        dropped = self._item is not None
        if dropped:
            self.dropped += 1
        self._item = item
        self._event.set()
        return dropped

    def peek(self) -> T | None:
        """The newest item not yet taken, left in place (None: nothing new)."""
        return self._item

    def take(self) -> T | None:
        """Take the newest item now, if there is one."""
        item, self._item = self._item, None
        return item

    async def get(self) -> T:
        """Wait for and take the newest item."""
        while self._item is None:
            if self._closed:
                raise MailboxClosed
            self._event.clear()
            await self._event.wait()
        item, self._item = self._item, None
        return item

    def close(self) -> None:
        self._closed = True
        self._item = None
        self._event.set()
