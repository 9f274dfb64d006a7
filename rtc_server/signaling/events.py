"""A session's detections for any consumer: Server-Sent Events and a WebSocket.

``GET /sessions/{id}/events`` (``text/event-stream``) and ``GET /sessions/{id}/ws`` give
the same JSON messages the session's ``detections`` data channel carries, one per
processed frame, to programs that are not the sender: dashboards, alerting jobs, ``curl``,
another browser tab. ``{id}`` is any live stream's id, whatever its source (``/offer``,
``/whip``, a pulled URL).

The HTTP framing lives here; the queueing does not: each connection is a
``rtc_server.streams.sinks.Subscriber`` — a bounded newest-wins queue the stream hands
messages to without ever waiting — and this module pumps that queue into the connection.
A slow reader therefore loses old messages (counted, shown in ``GET /sessions``), never
the server's memory: what is held per subscriber is its queue plus the transport's
64 KiB write buffer, past which a write waits for the reader.

Messages, in order: the settings in force (the ``config`` ack, with the model's class
names), every message the stream publishes (detections, config changes, errors), and at
the end ``{"type": "closed", "reason": ...}`` when the session ends or the server stops.
Keep-alives: an SSE comment line (``: keep-alive``) after ``keepalive`` seconds without a
message; WebSocket pings every ``keepalive`` seconds (a peer that stops answering is
dropped). A WebSocket may also send control messages (``config``, ``ping``, ``report``),
answered as on the data channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from rtc_server.streams.control import MAX_CONTROL_BYTES
from rtc_server.streams.messages import encode
from rtc_server.streams.sinks import Subscriber, SubscriptionEnded
from rtc_server.streams.stream import Stream

from .auth import require_session_access
from .context import API, RATE_LIMITS, REGISTRY, SUBSCRIPTIONS, TOKENS
from .errors import ClientError

log = logging.getLogger(__name__)

#: A single write a reader cannot take within this long ends its subscription.
WRITE_TIMEOUT_S = 30.0
#: Once the session ends, a subscriber gets this long to take what is queued and the end.
END_GRACE_S = 2.0
#: Where an ``EventSource`` waits before reconnecting (ms): after a server restart, say.
SSE_RETRY_MS = 2000



def subscribe(request: web.Request, kind: str) -> tuple[Stream, Subscriber]:
    """Auth, find the stream, check its subscriber cap, attach a new subscriber to it."""
    app = request.app
    app[RATE_LIMITS].check("subscribe", request)
    session_id = request.match_info["id"]
    config = app[API]
    require_session_access(request, config, app[TOKENS], session_id)
    registry = app[REGISTRY]
    stream = registry.get(session_id)
    if stream is None or stream.closed:
        raise ClientError(404, "unknown_session", f"no live session {session_id}")
    live = sum(1 for s in stream.sinks if isinstance(s, Subscriber))
    if config.max_subscribers and live >= config.max_subscribers:
        raise ClientError(503, "too_many_subscribers", f"session {session_id} has {live} subscribers, "
                          f"the most it takes (RTC_MAX_SUBSCRIBERS)", {"Retry-After": "5"})
    # rtc_subscriber_messages_lost_total{kind}: messages dropped for subscribers too slow to read them
    subscriber = Subscriber(kind, config.subscriber_queue, registry.metrics.subscriber_lost.labels(kind).inc)
    subscriber.send(stream.config_ack())
    stream.add_sink(subscriber)
    app[SUBSCRIPTIONS].add(subscriber)
    stream.log.info("%s subscriber from %s (%d now)", kind, request.remote, live + 1)
    return stream, subscriber


async def pump(subscriber: Subscriber, send: Callable[[dict[str, Any]], Awaitable[None]],
               keepalive: Callable[[], Awaitable[None]] | None, idle: float) -> None:
    """Write the subscriber's messages until it ends (``SubscriptionEnded``).

    Each write may take at most ``WRITE_TIMEOUT_S`` (the transport waits for a slow reader
    past its 64 KiB buffer); once the subscription is closed, whatever write is in flight
    gets ``END_GRACE_S`` more. Raises ``TimeoutError`` for a reader too slow for either.
    """
    loop = asyncio.get_running_loop()
    in_flight: list[asyncio.Timeout] = []  # the deadline of the write under way, if any

    def hurry() -> None:
        for deadline in in_flight:
            if (deadline.when() or 0) > loop.time() + END_GRACE_S:
                deadline.reschedule(loop.time() + END_GRACE_S)

    subscriber.on_close(hurry)
    while True:
        message = await subscriber.next(None if keepalive is None else idle)
        async with asyncio.timeout(END_GRACE_S if subscriber.closed else WRITE_TIMEOUT_S) as deadline:
            in_flight.append(deadline)
            try:
                if message is not None:
                    await send(message)
                elif keepalive is not None:
                    await keepalive()
            finally:
                in_flight.clear()


def _closed_message(stream: Stream, subscriber: Subscriber) -> dict[str, Any]:
    return {"type": "closed", "reason": subscriber.end_reason or stream.close_reason or "closed"}


def _unsubscribe(stream: Stream, subscriber: Subscriber, request: web.Request) -> None:
    stream.remove_sink(subscriber)
    subscriber.close()
    request.app[SUBSCRIPTIONS].discard(subscriber)
    stream.log.info("%s subscriber from %s left (%d delivered, %d lost)", subscriber.kind, request.remote,
                    subscriber.delivered, subscriber.lost)


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /sessions/{id}/events``: Server-Sent Events, one ``data:`` line per message."""
    stream, subscriber = subscribe(request, "sse")
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-store",
        "X-Accel-Buffering": "no",  # nginx & co.: do not buffer the stream
    })
    try:
        await response.prepare(request)
        await response.write(f"retry: {SSE_RETRY_MS}\n\n".encode())

        async def send(message: dict[str, Any]) -> None:
            await response.write(f"data: {encode(message)}\n\n".encode())

        async def keepalive() -> None:
            await response.write(b": keep-alive\n\n")

        try:
            await pump(subscriber, send, keepalive, request.app[API].keepalive)
        except SubscriptionEnded:
            async with asyncio.timeout(END_GRACE_S):
                await send(_closed_message(stream, subscriber))
    except (ConnectionResetError, TimeoutError):
        # The reader is gone or too slow: drop the connection, buffered bytes and all.
        if request.transport is not None:
            request.transport.abort()
    finally:
        _unsubscribe(stream, subscriber, request)
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """``GET /sessions/{id}/ws``: the same messages as WebSocket text frames; control
    messages in."""
    stream, subscriber = subscribe(request, "ws")
    keepalive = request.app[API].keepalive
    ws = web.WebSocketResponse(heartbeat=keepalive, max_msg_size=MAX_CONTROL_BYTES)
    try:
        await ws.prepare(request)
        reader = asyncio.ensure_future(_read_controls(ws, stream, subscriber))
        try:
            await pump(subscriber, lambda m: ws.send_str(encode(m)), None, keepalive)
        except SubscriptionEnded:
            if not ws.closed:
                async with asyncio.timeout(END_GRACE_S):
                    await ws.send_str(encode(_closed_message(stream, subscriber)))
                    await ws.close()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    except (ConnectionResetError, TimeoutError):
        if request.transport is not None:
            request.transport.abort()
    finally:
        _unsubscribe(stream, subscriber, request)
    return ws


async def _read_controls(ws: web.WebSocketResponse, stream: Stream, subscriber: Subscriber) -> None:
    """Control messages from the WebSocket, through the stream's one control path; ends the
    subscription when the client closes (or stops answering pings)."""
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                reply = stream.control(message.data, origin=subscriber)
                if reply is not None:
                    subscriber.send(reply)
    finally:
        subscriber.end("client closed")


def setup_event_routes(app: web.Application) -> None:
    """The routes, on the subscription set the root made (``SUBSCRIPTIONS``; its gauge too)."""
    app.router.add_get("/sessions/{id}/events", events)
    app.router.add_get("/sessions/{id}/ws", websocket)
    app.on_shutdown.append(_end_subscriptions)


async def _end_subscriptions(app: web.Application) -> None:
    """Before aiohttp waits for open requests on shutdown: end every subscription, so SSE
    and WebSocket consumers are told and let go at once instead of holding the exit."""
    subscriptions: set[Subscriber] = app[SUBSCRIPTIONS]
    for subscriber in list(subscriptions):
        subscriber.end("server shutting down")
