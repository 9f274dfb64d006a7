"""Quiet the SCTP sends aiortc fires after their peer closed (aiortc#1040).

aiortc's ``RTCSctpTransport`` sends from fire-and-forget tasks (``_transmit``,
``_data_channel_flush``, ``_send_chunk``, ...). When a session ends while one is pending — a
client killed mid-stream and reaped, a data channel still retransmitting — the task runs
after the DTLS transport shut down and fails with ``ConnectionError`` ("Cannot send
encrypted data, not connected") or ``OpenSSL.SSL.Error`` ("protocol is shutdown"). Nobody
awaits those tasks, so asyncio logs each as "Task exception was never retrieved" with a
traceback: an ERROR for what is a normal end of a session (seen here under load, in the
soak test's abrupt clients). Nothing is lost: the peer is gone.

``use_quiet_late_sends(loop)`` (installed once by the composition root, on the serving loop)
adds an exception handler that turns exactly those — a task of ``RTCSctpTransport`` that
failed with one of those two exceptions — into one DEBUG line, and passes everything else
on to the handler that was there before (asyncio's default: the traceback, as ever).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from OpenSSL import SSL

__all__ = ["is_late_sctp_send", "use_quiet_late_sends"]

log = logging.getLogger(__name__)

#: What a send on a closed DTLS transport raises: aiortc's own check, or OpenSSL's once the
#: session was shut down under a send already past that check.
LATE_SEND_ERRORS = (ConnectionError, SSL.Error)


def is_late_sctp_send(context: dict[str, Any]) -> bool:
    """Whether an asyncio exception ``context`` is an unawaited SCTP send that failed because
    its transport had closed."""
    future = context.get("future")
    if not isinstance(future, asyncio.Task) or not isinstance(context.get("exception"), LATE_SEND_ERRORS):
        return False
    return getattr(future.get_coro(), "__qualname__", "").startswith("RTCSctpTransport.")


def use_quiet_late_sends(loop: asyncio.AbstractEventLoop) -> None:
    """Install the handler on ``loop``, in front of whatever handler it had."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if is_late_sctp_send(context):
            log.debug("SCTP send after its session closed, dropped: %s", context["exception"])
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
