"""CORS, default same-origin only: a page served by another origin may call the API only
when that origin is listed in ``RTC_CORS_ORIGINS`` (``*`` = any).

A tiny middleware rather than a library: the policy is three rules. Requests without an
``Origin`` header (curl, probes, aiortc clients) and same-origin requests pass untouched.
A cross-origin request from an unlisted origin is refused with 403 JSON — not merely left
without ``Access-Control-Allow-Origin`` — so it cannot create sessions or spend inference
even when the browser would hide the answer. Listed origins get their preflight
(``OPTIONS``) answered here and ``Access-Control-Allow-Origin`` on every answer, errors
included, so their pages can read our JSON errors; WHIP's ``Location``, ``Link`` and
``ETag`` are exposed to them (a browser WHIP client needs the session URL to end it).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import Handler, count_error, error_response
from .hosts import HostPolicy

ALLOWED_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
#: ``If-Match``: WHIP trickle-ICE ``PATCH`` requests carry the session's entity tag.
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"
#: Response headers a cross-origin page may read: WHIP's session URL, ICE servers, entity tag;
#: WHIP's session token; a snapshot's frame id and size.
EXPOSED_HEADERS = "Location, Link, ETag, X-Session-Token, X-Session-Token-Expires, X-Frame-Id, X-Frame-Size"
PREFLIGHT_MAX_AGE = "600"


def _same_origin(request: web.Request, origin: str, hosts: HostPolicy) -> bool:
    """Scheme and host:port both match (an origin is both), and that host is one this server
    answers for (``hosts.py``): the ``Host`` header alone is the caller's word, and a DNS
    rebinding page sends its own name as both ``Origin`` and ``Host``. Behind a
    TLS-terminating proxy ``request.scheme`` is the client's, from ``X-Forwarded-Proto``
    (rtc_server/signaling/proxies.py)."""
    parts = urlsplit(origin)
    netloc = parts.netloc.lower()
    return (parts.scheme.lower() == request.scheme and netloc == request.headers.get("Host", "").lower()
            and hosts.allows(netloc))


def cors_middleware(origins: Iterable[str], hosts: HostPolicy | None = None) -> Middleware:
    allowed = frozenset(origins)
    names = HostPolicy() if hosts is None else hosts

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or _same_origin(request, origin, names):
            return await handler(request)
        if "*" not in allowed and origin not in allowed:
            count_error(request, "origin_not_allowed")
            return error_response(403, "origin_not_allowed",
                                  f"origin {origin!r} may not call this server (see RTC_CORS_ORIGINS)")
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={
                **headers,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            })
        response = await handler(request)
        response.headers.update(headers)
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    return cors
