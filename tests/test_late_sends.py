"""aiortc's SCTP sends after a session closed are one DEBUG line, not an ERROR traceback.

Seen in the soak test under load: a client killed mid-stream is reaped while its data
channel still has a send pending; aiortc's unawaited task then fails on the shut-down DTLS
session and asyncio logs "Task exception was never retrieved" with a traceback
(aiortc#1040). Here the same state is made on purpose with two real aiortc peers over
loopback: the DTLS session of one is shut down under an open data channel, then a message
is sent on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import pytest
from aiortc import RTCPeerConnection

from rtc_server.webrtc.late_sends import use_quiet_late_sends


async def late_send_after_shutdown() -> None:
    """Two connected peers; shut one's DTLS session down; send on its data channel; let the
    failed task be collected (that is when asyncio reports it); close both."""
    a, b = RTCPeerConnection(), RTCPeerConnection()
    channel = a.createDataChannel("detections")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    try:
        await asyncio.wait_for(opened.wait(), 15)
        assert a.sctp is not None
        a.sctp.transport._ssl.shutdown()   # what a close under a pending send leaves behind
        channel.send("late")               # flushed from a task nobody awaits
        for _ in range(20):
            await asyncio.sleep(0.05)
            gc.collect()
    finally:
        for pc in (a, b):
            with contextlib.suppress(Exception):   # a's close cannot send its SCTP ABORT either
                await pc.close()
        gc.collect()


async def test_a_late_sctp_send_is_one_debug_line_and_other_errors_still_surface(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.DEBUG)

    # Without the handler: asyncio's ERROR with the traceback (the control: the state is real).
    await late_send_after_shutdown()
    unretrieved = [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    assert unretrieved and any("protocol is shutdown" in str(r.exc_info or r.getMessage()) or
                               "not connected" in str(r.exc_info or r.getMessage()) for r in unretrieved)
    caplog.clear()

    use_quiet_late_sends(loop)
    try:
        await late_send_after_shutdown()
        assert not [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
        quiet = [r for r in caplog.records if r.name == "rtc_server.webrtc.late_sends"]
        assert quiet and all(r.levelno == logging.DEBUG and r.exc_info is None for r in quiet)

        # Anything else still reaches the handler that was there before.
        caplog.clear()

        async def fails() -> None:
            raise ConnectionError("not an SCTP send")

        task = loop.create_task(fails())
        await asyncio.sleep(0.05)
        del task
        gc.collect()
        assert [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    finally:
        loop.set_exception_handler(None)
