"""Any replica answers (issue 22): a middleware that sends a session-scoped request reaching a
replica other than the session's owner on to the owner, and merges the listings of all
replicas.

- **Session-scoped** (``/sessions/{id}`` PATCH/DELETE, ``/sessions/{id}/token``,
  ``/sessions/{id}/snapshot.jpg``, ``/sessions/{id}/events`` (SSE), ``/sessions/{id}/ws``
  (WebSocket), ``/streams/{id}``, ``/whip/{id}`` PATCH/DELETE): a session not live here but
  owned by another live replica (the ``Directory``) is forwarded to the owner's internal URL.
  SSE is streamed through chunk by chunk; a WebSocket is bridged message by message.
- **Listings** (``GET /sessions``, ``GET /streams``): this replica's own answer plus every
  other live replica's, each view naming its ``replica`` (the owner's internal URL).

The caller's rights are checked here, at the first hop (``authorize``), before anything is
forwarded; the owner checks them again with the same credentials (forwarded as they came).
The internal hop carries ``X-RTC-Internal: <RTC_INTERNAL_SECRET>``: a request with a wrong
one is refused (403), a request with the right one is never forwarded again (no loops) and
is the only way to ask a replica for its own listing alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from rtc_server.store import StoreUnavailable

from .directory import Directory

log = logging.getLogger(__name__)

INTERNAL_HEADER = "X-RTC-Internal"
#: The caller's address as the first hop saw it (after its trusted proxies): the owner's rate
#: limits and logs see the real client, not the replica that forwarded the request.
CLIENT_HEADER = "X-RTC-Client"
#: Session-scoped paths: the session id is group 1.
SESSION_PATHS = re.compile(
    r"^/(?:sessions|streams|whip)/([0-9A-Za-z_-]{1,128})(?:/(?:events|ws|token|snapshot\.jpg))?$")
#: Listings merged across replicas: path -> the key of the list in the JSON answer.
LISTINGS = {"/sessions": "sessions", "/streams": "streams"}
#: Request headers that go along to the owner.
FORWARDED_REQUEST = ("Authorization", "Content-Type", "Accept", "If-Match")
#: Response headers that come back from the owner.
FORWARDED_RESPONSE = ("Content-Type", "Cache-Control", "Retry-After", "WWW-Authenticate", "Location", "ETag",
                      "Link", "Allow", "X-Accel-Buffering")
#: Largest forwarded request body (offers and settings are far smaller).
MAX_FORWARDED_BODY = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authorize = Callable[[web.Request, str], None]
IsLocal = Callable[[str], bool]


def forwarding_middleware(directory: Directory, secret: str, is_local: IsLocal, authorize: Authorize,
                          client: Callable[[], aiohttp.ClientSession]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        internal = request.headers.get(INTERNAL_HEADER)
        if internal is not None:
            if not hmac.compare_digest(internal.encode(), secret.encode()):
                return web.json_response({"error": "forbidden", "detail": "the internal hop's secret is not valid"},
                                         status=403)
            client_address = request.headers.get(CLIENT_HEADER)
            if client_address:
                request = request.clone(remote=client_address)
            return await handler(request)  # from another replica: answer here, never forward again
        if request.method == "GET" and request.path in LISTINGS:
            return await _merged_listing(request, handler, directory, secret, client())
        match = SESSION_PATHS.match(request.path)
        if match is None or request.method == "OPTIONS" or is_local(match.group(1)):
            return await handler(request)
        session_id = match.group(1)
        try:
            owner = await directory.owner(session_id)
        except StoreUnavailable:
            owner = None  # the directory is away: answer as one replica would
        if owner is None:
            return await handler(request)
        authorize(request, session_id)  # the caller's rights, at the first hop
        return await _forward(request, owner, secret, client())

    return middleware


def _upstream_headers(request: web.Request, secret: str) -> dict[str, str]:
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST if name in request.headers}
    headers[INTERNAL_HEADER] = secret
    if request.remote:
        headers[CLIENT_HEADER] = request.remote
    return headers


async def _forward(request: web.Request, owner: str, secret: str, client: aiohttp.ClientSession) -> web.StreamResponse:
    target = owner.rstrip("/") + request.rel_url.path_qs
    headers = _upstream_headers(request, secret)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _bridge_websocket(request, target, headers, client)
    body = await request.content.read(MAX_FORWARDED_BODY + 1) if request.can_read_body else b""
    if len(body) > MAX_FORWARDED_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORWARDED_BODY, actual_size=len(body))
    try:
        upstream = await client.request(request.method, target, data=body or None, headers=headers,
                                        allow_redirects=False)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("forwarding %s %s to %s failed: %s", request.method, request.path, owner, exc)
        return web.json_response({"error": "owner_unreachable", "detail": f"the replica running this session did "
                                  f"not answer ({type(exc).__name__}); retry shortly"}, status=503,
                                 headers={"Retry-After": "2"})
    async with upstream:
        out_headers = {name: upstream.headers[name] for name in FORWARDED_RESPONSE if name in upstream.headers}
        if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                async for chunk in upstream.content.iter_any():  # streamed through as it comes
                    await response.write(chunk)
            return response
        payload = await upstream.read()
        out_headers.pop("Content-Type", None)
        return web.Response(status=upstream.status, body=payload, headers=out_headers,
                            content_type=upstream.content_type if payload else None)


async def _bridge_websocket(request: web.Request, target: str, headers: dict[str, str],
                            client: aiohttp.ClientSession) -> web.StreamResponse:
    try:
        upstream = await client.ws_connect(target.replace("http", "ws", 1), headers=headers, heartbeat=None)
    except aiohttp.WSServerHandshakeError as exc:  # the owner refused (401, 404, ...): say so as it did
        return web.json_response({"error": "refused_by_owner", "detail": exc.message}, status=exc.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return web.json_response({"error": "owner_unreachable", "detail": f"the replica running this session did "
                                  f"not answer ({type(exc).__name__})"}, status=503, headers={"Retry-After": "2"})
    downstream = web.WebSocketResponse()
    await downstream.prepare(request)

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break

    tasks = [asyncio.create_task(pump(upstream, downstream)), asyncio.create_task(pump(downstream, upstream))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await downstream.close()
    return downstream


async def _merged_listing(request: web.Request, handler: Handler, directory: Directory, secret: str,
                          client: aiohttp.ClientSession) -> web.StreamResponse:
    key = LISTINGS[request.path]
    local = await handler(request)  # auth and rate limits: the handler's own, here at the first hop
    if not isinstance(local, web.Response) or local.status != 200 or local.body is None:
        return local
    mine = json.loads(local.body if isinstance(local.body, bytes) else local.text or "{}")
    views = [{**view, "replica": directory.internal_url} for view in mine.get(key, [])]
    try:
        peers = await directory.peers()
    except StoreUnavailable:
        peers = []
    headers = _upstream_headers(request, secret)

    async def fetch(peer: str) -> list[dict[str, Any]]:
        try:
            async with client.get(peer.rstrip("/") + request.rel_url.path_qs, headers=headers) as answer:
                if answer.status != 200:
                    return []
                return [{**view, "replica": peer} for view in (await answer.json()).get(key, [])]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("listing %s of %s failed: %s", request.path, peer, exc)
            return []
    for found in await asyncio.gather(*(fetch(peer) for peer in peers)):
        views += found
    return web.json_response({key: views})
