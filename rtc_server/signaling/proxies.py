"""Who the client is when the server sits behind reverse proxies (``RTC_TRUSTED_PROXIES``).

Behind Cloud Run's front end, a GKE load balancer, Caddy or nginx, the TCP peer is the
proxy: rate limits keyed on it would put every user in one bucket, logs would name the
proxy, and a TLS-terminating proxy would make every request look like plain HTTP to the
same-origin check. Proxies say who they forwarded for in ``Forwarded`` (RFC 7239) or
``X-Forwarded-For`` / ``X-Forwarded-Proto``.

Anyone can send those headers, so they are believed only when the TCP peer is a trusted
proxy, and then only **the one header the proxy sets** (``RTC_PROXY_HEADER``:
``X-Forwarded-For``, which Google's front ends, nginx and HAProxy append to, or
``Forwarded``): a proxy appends to its own header and passes any other through untouched,
so a client's own ``Forwarded`` must not outrank the ``X-Forwarded-For`` the proxy wrote
(issue 20: it did, and rate limits never triggered). Within that header the chain is
walked from the right, skipping the addresses of trusted proxies: the client is the
right-most hop that is *not* a trusted proxy (a client may prepend anything it likes; it
cannot forge what our own proxies append). Its scheme is the one the same hop reports
(``X-Forwarded-Proto`` beside ``X-Forwarded-For``, ``proto=`` in ``Forwarded``).
``resolve_client`` (a middleware, first in the chain) does this once and hands on
``request.clone(remote=client, scheme=scheme)``: rate limits, CORS, logs and handlers
all read ``request.remote`` / ``request.scheme`` and need nothing else. The resolved
address is also left on the original request under ``CLIENT`` for the access log,
which aiohttp writes from the original request.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware

from .errors import Handler

log = logging.getLogger(__name__)

#: The resolved client address, on the request aiohttp's access log sees.
CLIENT: web.RequestKey[str] = web.RequestKey("rtc_client", str)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_node(node: str) -> IPAddress | None:
    """A ``for=`` / X-Forwarded-For node -> its address; None for ``unknown``, ``_hidden``
    identifiers and garbage. Ports (``1.2.3.4:80``, ``[::1]:80``) are dropped."""
    node = node.strip().strip('"')
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        node = node.partition(":")[0]
    try:
        return ipaddress.ip_address(node)
    except ValueError:
        return None


#: The headers a trusted proxy may be said to set (``RTC_PROXY_HEADER``), by lower-case name.
PROXY_HEADERS = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}


def forwarded_hops(request: web.BaseRequest, header: str = "X-Forwarded-For") -> list[tuple[str, str | None]]:
    """``(node, proto)`` per proxy hop, client-most first, from ``header`` alone:
    ``Forwarded`` (RFC 7239), or ``X-Forwarded-For`` with ``X-Forwarded-Proto`` (one value
    for all hops, or one per hop). The other header is never read."""
    if header.lower() == "forwarded":
        return [(element.get("for", ""), element.get("proto")) for element in request.forwarded]
    nodes = [n.strip() for n in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if n.strip()]
    protos = [p.strip() for p in ",".join(request.headers.getall("X-Forwarded-Proto", [])).split(",") if p.strip()]
    if len(protos) == len(nodes):
        return list(zip(nodes, protos, strict=True))
    proto = protos[-1] if len(protos) == 1 else None
    return [(node, proto) for node in nodes]


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_of(request: web.BaseRequest, trusted: Sequence[IPNetwork],
              header: str = "X-Forwarded-For") -> tuple[str, str] | None:
    """(client address, scheme) when the peer is a trusted proxy; None to keep the peer's own.

    Walks ``header``'s hops from the right: each trusted proxy's address is skipped, the
    first that is not one is the client. A hop that names no address (``unknown``, an
    obfuscated ``_hidden``, garbage) ends the walk at the last address known."""
    peer = parse_node(request.remote or "")
    if peer is None or not _trusted(peer, trusted):
        return None
    client, scheme = str(peer), request.scheme
    for node, proto in reversed(forwarded_hops(request, header)):
        address = parse_node(node)
        if address is None:
            break
        client = str(address)
        if proto and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        if not _trusted(address, trusted):
            break
    return client, scheme


def resolve_client(trusted: Iterable[IPNetwork], header: str = "X-Forwarded-For") -> Middleware:
    """The middleware: behind ``trusted`` proxies, the client named by ``header`` alone."""
    networks = tuple(trusted)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resolved = client_of(request, networks, header) if networks else None
        if resolved is None:
            return await handler(request)
        client, scheme = resolved
        request[CLIENT] = client
        return await handler(request.clone(remote=client, scheme=scheme))

    return middleware


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log line, naming the resolved client instead of the proxy."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        client = request.get(CLIENT, request.remote)
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.1fms "%s"', client, request.method, request.path_qs,
                         request.version.major, request.version.minor, response.status, response.body_length,
                         time * 1000, request.headers.get("User-Agent", "-"))
