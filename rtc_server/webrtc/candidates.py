"""Which remote ICE candidates a session may use: the blind-UDP-SSRF guard (issue 20).

A remote candidate is an address the *client* names and the *server* then sends STUN
connectivity checks to, over UDP, from its own network position. Unfiltered, an offer (or a
WHIP ``PATCH``) naming ``169.254.169.254``, ``10.0.0.5:53`` or ``127.0.0.1:11211`` makes the
server send packets into its own cloud, private network or host: a blind SSRF. So every
remote candidate, from the offer's SDP and from every trickled fragment alike, passes
``RemoteCandidates.keep``:

- its address must be allowed by the same rule as pull sources (``rtc_server/addresses.py``:
  public unicast, or in ``RTC_ICE_ALLOW_NETWORKS``);
- a name instead of an address (an mDNS ``*.local`` candidate, whose resolution is a
  multicast query onto the server's LAN) is dropped;
- when every local ICE address is loopback, only loopback candidates are kept (nothing
  else is reachable from there);
- on a server that only this machine's users reach (it listens on loopback, behind no
  proxy and under no public name: ``make run``'s default), the clients' private, loopback
  and mDNS candidates are theirs to use, so the first two rules do not apply
  (``trust_local``): a browser on the same machine offers only such candidates.

Dropped candidates are dropped silently towards ICE (RFC 9725 asks a WHIP server to ignore
candidates it cannot use) and counted in the session's log line. The peer still connects
through the candidates that remain, and through peer-reflexive ones: aioice learns those
from the checks the client itself sends, which answer the client's own packets and so
reach nowhere the client did not come from.

Every candidate received counts against ``max_candidates`` per session — kept or dropped,
offer and trickle together — so a client cannot make the server parse and check an
unbounded number; past the cap the offer or fragment is refused (``TooManyCandidates``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ..addresses import AddressPolicy, address_kind
from .ice import is_loopback_only

#: Remote candidates per session at most (offer and trickle together). A browser sends a
#: handful (host, server-reflexive, relay, per interface and transport); 32 leaves room.
DEFAULT_MAX_REMOTE_CANDIDATES = 32


class TooManyCandidates(ValueError):
    """The session's remote candidates would exceed the cap; a client error."""


def candidate_address(candidate: str) -> str | None:
    """The connection address of ``candidate:<foundation> <component> <transport> <priority>
    <address> <port> typ ...`` (``a=`` may be present or not); None when malformed."""
    parts = candidate.removeprefix("a=").split()
    return parts[4] if len(parts) >= 6 else None


class RemoteCandidates:
    """One session's remote candidates: which to keep, and how many have come."""

    def __init__(self, policy: AddressPolicy, local_addresses: Sequence[str] = (),
                 max_candidates: int = DEFAULT_MAX_REMOTE_CANDIDATES, trust_local: bool = False) -> None:
        self._policy = policy
        self._trust_local = trust_local
        self._loopback_only = is_loopback_only(local_addresses)
        self.max_candidates = max_candidates
        #: Candidates received so far (offer and trickle), kept or not.
        self.received = 0
        #: Candidates dropped so far.
        self.dropped = 0

    def why_dropped(self, candidate: str) -> str | None:
        """Why ``candidate`` may not be used, or None if it may."""
        text = candidate_address(candidate)
        if text is None:
            return "malformed"
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return None if self._trust_local else "a name, not an address (mDNS)"
        if self._loopback_only and not address.is_loopback:
            return "unreachable from the loopback-only ICE addresses"
        if not self._trust_local and not self._policy.allowed(address):
            return f"a {address_kind(address)} address (not in RTC_ICE_ALLOW_NETWORKS)"
        return None

    def admit(self, count: int) -> None:
        """Count ``count`` more candidates; ``TooManyCandidates`` (nothing counted) past the cap."""
        if self.received + count > self.max_candidates:
            raise TooManyCandidates(
                f"too many ICE candidates: {self.received + count} for this session, at most "
                f"{self.max_candidates} (RTC_MAX_REMOTE_CANDIDATES)")
        self.received += count

    def keep(self, candidate: str) -> bool:
        if self.why_dropped(candidate) is None:
            return True
        self.dropped += 1
        return False

    def filter_sdp(self, sdp: str) -> tuple[str, int]:
        """The offer with its disallowed candidates removed, and how many it carried; counts
        them (``TooManyCandidates`` past the cap)."""
        lines = sdp.splitlines()
        offered = [ln for ln in lines if ln.startswith("a=candidate:")]
        self.admit(len(offered))
        kept = [ln for ln in lines if not ln.startswith("a=candidate:") or self.keep(ln)]
        return "\r\n".join(kept) + "\r\n", len(offered)
