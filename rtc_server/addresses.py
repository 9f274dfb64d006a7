"""Which IP addresses the server may be made to send to: one rule for every client-chosen
destination (issue 20).

Two kinds of client input make the server send packets to an address the client picked:
a pull URL (``ingest/policy.py``: the server connects to it) and a WebRTC peer's remote ICE
candidates (``webrtc/candidates.py``: the server sends STUN checks to them). Both are
judged here, by the same rule, so that neither reaches what only the server can reach:

- **public unicast** addresses are allowed;
- loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 — the cloud metadata
  service 169.254.169.254 among them — and fe80::/10), shared (100.64/10), documentation,
  reserved, multicast, unspecified and site-local addresses are refused, unless the address
  lies in one of the configured ``allow_networks``;
- IPv6 forms that carry an IPv4 address (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``,
  6to4, Teredo, IPv4-compatible) are judged by that IPv4 address too.

Pure (stdlib only) and transport-free: ``config`` validation, ``ingest`` and ``webrtc`` all
import it, and it imports nothing of theirs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings as networks; raises ``ValueError`` naming a bad one."""
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a network (CIDR such as 192.168.1.0/24): {exc}") from exc
    return tuple(parsed)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if int(address) >> 32 == 0 and int(address) > 0xFFFF:  # IPv4-compatible ::a.b.c.d (not ::, ::1)
        return ipaddress.IPv4Address(int(address))
    return None


def is_public(address: IPAddress) -> bool:
    """A public unicast address (the address itself only; see ``AddressPolicy.allowed``)."""
    if address.is_multicast or address.is_unspecified:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    return address.is_global


def address_kind(address: IPAddress) -> str:
    """What kind of non-public address this is, for error messages: "loopback", "private", ..."""
    for a in (embedded_ipv4(address), address):  # what it stands for says more
        if a is None:
            continue
        for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
            if getattr(a, f"is_{name}"):
                return name.replace("_", "-")
    return "non-public"


@dataclass(frozen=True)
class AddressPolicy:
    """Public unicast addresses, plus whatever lies in ``allow_networks``."""

    #: Networks allowed although they are not public (a LAN's, 127.0.0.0/8 for tests).
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[str]) -> AddressPolicy:
        """From CIDR strings; raises ``ValueError`` naming a bad one."""
        return cls(parse_networks(networks))

    def allowed(self, address: IPAddress) -> bool:
        candidates = [address]
        embedded = embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        if any(a in net for a in candidates for net in self.allow_networks):
            return True
        return all(is_public(a) for a in candidates)
