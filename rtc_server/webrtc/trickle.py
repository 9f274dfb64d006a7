"""Trickle ICE fragments (``application/trickle-ice-sdpfrag``, RFC 8840) as WHIP sends them.

A WHIP client that trickles sends its candidates after the answer in ``PATCH`` requests
(RFC 9725 §4.3.2)::

    a=ice-ufrag:EsAw
    a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
    m=audio 9 UDP/TLS/RTP/SAVPF 111
    a=mid:0
    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0
    a=end-of-candidates

``IceFragment.parse`` reads that (anything it cannot read is a ``ValueError``: 400);
applying it to a peer is ``PeerSource.add_remote_ice``. Credentials that differ from the
session's mean an ICE restart (RFC 9725 §4.3.3), which aiortc cannot perform.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.sdp import SessionDescription, candidate_from_sdp


@dataclass(frozen=True)
class IceFragment:
    ufrag: str | None
    pwd: str | None
    #: ``(mid, "candidate:...")`` in the order sent; ``mid`` is None before any ``a=mid``.
    candidates: tuple[tuple[str | None, str], ...]
    end_of_candidates: bool

    @classmethod
    def parse(cls, text: str) -> IceFragment:
        ufrag = pwd = mid = None
        candidates: list[tuple[str | None, str]] = []
        end = False
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise ValueError(f"line {number} is not an SDP line: {line[:80]!r}")
            kind, value = line[0], line[2:]
            if kind == "m":
                mid = None  # a new media section; its a=mid follows
                continue
            if kind != "a":
                continue  # other SDP lines carry nothing for ICE
            name, _, argument = value.partition(":")
            if name == "ice-ufrag":
                ufrag = argument
            elif name == "ice-pwd":
                pwd = argument
            elif name == "mid":
                mid = argument
            elif name == "candidate":
                try:
                    candidate_from_sdp(argument)
                except Exception as exc:  # aiortc's parser asserts, raises ValueError, IndexError, ...
                    raise ValueError(f"line {number}: not an ICE candidate: {argument[:80]!r}") from exc
                candidates.append((mid, argument))
            elif name == "end-of-candidates":
                end = True
        if (ufrag is None) != (pwd is None):
            raise ValueError("a fragment carries both a=ice-ufrag and a=ice-pwd, or neither")
        return cls(ufrag, pwd, tuple(candidates), end)


def remote_ice_credentials(sdp: str) -> tuple[str, str] | None:
    """The first media section's ICE ufrag/pwd of a (remote) session description."""
    for media in SessionDescription.parse(sdp).media:
        if media.ice is not None and media.ice.usernameFragment and media.ice.password:
            return media.ice.usernameFragment, media.ice.password
    return None
