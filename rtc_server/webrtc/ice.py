"""ICE settings: which STUN/TURN servers to use and which local addresses to offer.

Two knobs that aiortc/aioice do not expose as settings:

* ``RTC_ICE_SERVERS``: aiortc's default configuration uses a public STUN server (a DNS
  lookup and UDP to the internet); we pass an explicit list, empty by default.
* ``RTC_ICE_ADDRESSES``: aioice gathers host candidates on every interface address but
  loopback and has no option to choose. It looks ``aioice.ice.get_host_addresses`` up at
  call time, so replacing that module attribute (process-wide, before the first
  ``createAnswer``) makes it offer exactly the configured addresses — inside a container,
  on a multi-homed VM, or ``127.0.0.1`` for loopback-only tests.

Which remote candidates a session may use (the forbidden ranges, mDNS names, the
loopback-only rule, the cap per session) is ``candidates.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def rtc_configuration(ice_servers: Sequence[dict[str, Any]]) -> RTCConfiguration:
    """An ``RTCConfiguration`` with exactly these servers (none: no STUN/TURN at all)."""
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer host candidates on ``addresses`` only; an empty list restores aioice's choice."""
    for address in addresses:
        ipaddress.ip_address(address)  # ValueError on anything that is not an IP
    if not addresses:
        aioice.ice.get_host_addresses = _original_get_host_addresses  # type: ignore[assignment]
        return
    chosen = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a for a in chosen
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def is_loopback_only(addresses: Sequence[str]) -> bool:
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def advertise_address(sdp: str, public_address: str) -> str:
    """Put ``public_address`` in place of the local address of every host candidate.

    For 1:1 NAT (a GCE VM's external IP maps to its private one): the peer must be told
    the public address, while aioice keeps the socket bound to the private one. Only host
    candidates of the same IP version change, and a ``c=`` line naming a replaced address
    follows. Empty ``public_address``: the SDP is returned as it is.
    """
    if not public_address:
        return sdp
    version = ipaddress.ip_address(public_address).version
    replaced: set[str] = set()
    out = []
    for line in sdp.splitlines():
        parts = line.split()
        if line.startswith("a=candidate:") and len(parts) >= 8 and parts[6:8] == ["typ", "host"]:
            try:
                same_family = ipaddress.ip_address(parts[4]).version == version
            except ValueError:
                same_family = False  # an mDNS name: leave it
            if same_family:
                replaced.add(parts[4])
                parts[4] = public_address
                line = " ".join(parts)
        out.append(line)
    family = "IP4" if version == 4 else "IP6"
    out = [f"c=IN {family} {public_address}" if ln.startswith("c=IN ") and ln.split()[-1] in replaced else ln
           for ln in out]
    return "\r\n".join(out) + "\r\n"
