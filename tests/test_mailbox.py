"""The newest-wins mailbox: the worker always gets the latest frame; overwrites count."""

from __future__ import annotations

import asyncio

import pytest

from rtc_server.streams.mailbox import FrameMailbox, MailboxClosed


async def test_newest_item_wins_and_drops_are_counted() -> None:
    box: FrameMailbox[int] = FrameMailbox()
    for i in range(5):
        box.put(i)
    assert await box.get() == 4
    assert (box.received, box.dropped) == (5, 4)


async def test_get_waits_for_a_put() -> None:
    box: FrameMailbox[str] = FrameMailbox()
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    box.put("frame")
    assert await asyncio.wait_for(waiter, 1) == "frame"
    assert box.dropped == 0


async def test_close_wakes_a_waiting_get() -> None:
    box: FrameMailbox[int] = FrameMailbox()
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(waiter, 1)
    box.put(1)  # ignored after close
    assert box.received == 0
