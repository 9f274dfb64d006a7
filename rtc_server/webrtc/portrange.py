"""``RTC_UDP_PORTS``: keep aioice's host-candidate sockets inside a UDP port range.

A firewall (GCE, Kubernetes ``hostPort``/``NodePort``) needs a fixed UDP range, but aioice
binds every host candidate with ``local_addr=(address, 0)`` — any ephemeral port — and has
no option for it (aiortc issue 487, aioice issue 47). We do not edit the installed
library: ``use_udp_ports`` replaces ``aioice.ice.Connection.get_component_candidates``
(process-wide, like ``ice.use_host_addresses``) with a version that binds the host
sockets to a free port of the range, then does what aioice does with them (STUN
server-reflexive candidates) and lets aioice's own method gather the TURN relay
candidate. aioice is pinned (setup.cfg) because this follows its 0.13.0 internals.

One port serves one peer connection per address (aiortc bundles media and data on one
ICE component), so the range bounds concurrent sessions per address; when every port is
taken the session gets no host candidate (only TURN, if configured) and a warning is
logged.

The alternative without code: run the server in its own network namespace (a container)
and set ``sysctl net.ipv4.ip_local_port_range="40000 40100"`` there — every ephemeral port
then comes from that range, TCP client ports included.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import aioice.ice
import aioice.turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

log = logging.getLogger(__name__)

PortRange = tuple[int, int]
_Gather = Callable[..., Coroutine[Any, Any, list[Candidate]]]
_original_get_component_candidates: _Gather = aioice.ice.Connection.get_component_candidates


def bind_in_range(address: str, ports: PortRange) -> socket.socket:
    """A UDP socket bound to ``address`` on a free port of ``ports`` (tried in random order)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    candidates = list(range(ports[0], ports[1] + 1))
    random.shuffle(candidates)  # concurrent gatherers rarely race for the same port
    for port in candidates:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        sock.setblocking(False)
        return sock
    raise OSError(errno.EADDRINUSE, f"no free UDP port on {address} in {ports[0]}-{ports[1]}")


def _ranged_gatherer(ports: PortRange) -> _Gather:
    async def get_component_candidates(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []
        protocols: list[aioice.ice.StunProtocol] = []
        for address in addresses:
            try:
                sock = bind_in_range(address, ports)
            except OSError as exc:
                log.warning("no host candidate on %s: %s", address, exc)
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), sock=sock
                )
            except BaseException as exc:
                # The bound socket is ours until a transport owns it: close it whatever
                # went wrong (an OSError, a cancelled gather), or its port stays taken
                # for the life of the process (issue 20).
                sock.close()
                if not isinstance(exc, OSError):
                    raise
                log.warning("no host candidate on %s: %s", address, exc)
                continue
            # aioice's Connection.close() closes what is in _protocols: hand each one over
            # at once, so a later address that raises leaves nothing unowned.
            self._protocols.append(protocol)
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
                priority=candidate_priority(component, "host"), host=host, port=port, type="host",
            )
            candidates.append(protocol.local_candidate)
            protocols.append(protocol)

        # Server-reflexive candidates from our host sockets (IPv4 only, as aioice does);
        # aioice's own method, given no addresses, adds the TURN relay candidate if any.
        reflexive = [
            asyncio.create_task(aioice.ice.server_reflexive_candidate(p, self.stun_server))
            for p in protocols
            if self.stun_server and ipaddress.ip_address(p.local_candidate.host).version == 4
        ]
        relayed = await _original_get_component_candidates(self, component=component, addresses=[], timeout=timeout)
        if reflexive:
            done, pending = await asyncio.wait(reflexive, timeout=timeout)
            for task in pending:
                task.cancel()
            candidates += [task.result()[0] for task in done if task.exception() is None]
        return candidates + relayed

    return get_component_candidates


def use_udp_ports(ports: PortRange | None) -> None:
    """Bind host candidates within ``ports`` from now on; None restores aioice's own binding."""
    if ports is None:
        aioice.ice.Connection.get_component_candidates = _original_get_component_candidates  # type: ignore[method-assign]
        return
    aioice.ice.Connection.get_component_candidates = _ranged_gatherer(ports)  # type: ignore[method-assign]
