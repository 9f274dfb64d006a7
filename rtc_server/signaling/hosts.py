"""The ``Host`` allow-list: which names this server answers to.

DNS rebinding: a page on ``http://evil.test`` whose name the attacker re-points at the
victim's ``127.0.0.1`` (or at a server inside their network) is, to the browser, same-origin
with ``evil.test``, so it can read our answers. The browser sends ``Host: evil.test`` and
``Origin: http://evil.test``; a check that compares the two, both the attacker's, passes.
So the server answers only to names it knows: the loopback names (``localhost`` and any
loopback address, ``127.0.0.0/8`` or ``[::1]``, with any port) and the configured public names
(``RTC_PUBLIC_HOSTS``: ``host`` for any port, ``host:port`` for that port only). Any other
``Host`` gets **421 Misdirected Request** (RFC 9110 §15.5.20: "this server is not
configured to answer for that name") as a JSON error, before any handler runs.
``RTC_PUBLIC_HOSTS=*`` turns the check off — unsafe: it reopens DNS rebinding.

Exempt: the probes (``/healthz``, ``/readyz``), which orchestrators call with a bare IP as
``Host`` (a kubelet's pod IP) and which say nothing worth stealing. A request with no
``Host`` at all (HTTP/1.0) cannot come from a browser, so it is no rebinding and passes.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import Handler, count_error, error_response

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Paths answered whatever the ``Host``: liveness and readiness probes.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


def split_host(value: str) -> tuple[str, int | None]:
    """``"Example.COM:8080"`` -> ``("example.com", 8080)``; ``"[::1]"`` -> ``("::1", None)``.
    Raises ``ValueError`` for a port that is not a number in 1..65535."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r} is not host[:port]")
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, ""  # a bare IPv6 address has several colons and no port
    name = name.rstrip(".")
    if not name:
        raise ValueError(f"{value!r} names no host")
    if not port_text:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r}: the port must be a number in 1..65535")
    return name, int(port_text)


@dataclass(frozen=True)
class HostPolicy:
    """The names the server answers to (``RTC_PUBLIC_HOSTS`` plus loopback)."""

    #: ``(name, port)`` pairs; port None: any port.
    public: frozenset[tuple[str, int | None]] = frozenset()
    #: ``RTC_PUBLIC_HOSTS=*``: no check at all.
    any_host: bool = False

    @classmethod
    def of(cls, public_hosts: Iterable[str]) -> HostPolicy:
        entries = [h.strip() for h in public_hosts if h.strip()]
        if "*" in entries:
            return cls(any_host=True)
        return cls(public=frozenset(split_host(h) for h in entries))

    def allows(self, host: str) -> bool:
        if self.any_host:
            return True
        try:
            name, port = split_host(host)
        except ValueError:
            return False
        if name in LOOPBACK_NAMES or _is_loopback_address(name):
            return True
        return (name, None) in self.public or (port is not None and (name, port) in self.public)


def _is_loopback_address(name: str) -> bool:
    """``127.0.0.0/8`` and ``::1`` as literals: an attacker's DNS name never is one."""
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_middleware(policy: HostPolicy) -> Middleware:
    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is None or request.path in PROBE_PATHS or policy.allows(host):
            return await handler(request)
        log.info("%s %s %s -> 421 misdirected_request: Host %r", request.remote, request.method, request.path, host)
        count_error(request, "misdirected_request")
        return error_response(421, "misdirected_request",
                              f"this server does not answer for host {host[:100]!r}; it answers for loopback "
                              "names and the names in RTC_PUBLIC_HOSTS")

    return check_host
