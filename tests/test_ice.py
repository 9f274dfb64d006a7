"""ICE settings: configured host addresses, and filtering of unreachable remote candidates."""

from __future__ import annotations

import aioice.ice
import pytest

from rtc_server.addresses import AddressPolicy
from rtc_server.webrtc.candidates import RemoteCandidates
from rtc_server.webrtc.ice import is_loopback_only, use_host_addresses

OFFER = "\r\n".join([
    "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
    "a=candidate:2 1 udp 2122260223 10.1.2.3 50001 typ host",
    "a=candidate:3 1 udp 2122260223 0b1f2a.local 50002 typ host",
    "a=candidate:4 1 udp 2122260223 ::1 50003 typ host",
]) + "\r\n"


def filtered(local: list[str], *allow: str) -> str:
    return RemoteCandidates(AddressPolicy.of(allow), local).filter_sdp(OFFER)[0]


def test_loopback_only_drops_unreachable_and_mdns_candidates() -> None:
    out = filtered(["127.0.0.1"], "127.0.0.0/8", "::1/128", "10.0.0.0/8")
    assert "127.0.0.1 50000" in out and "::1 50003" in out
    assert "10.1.2.3" not in out and ".local" not in out
    assert out.startswith("v=0\r\nm=video")


def test_other_addresses_keep_the_allowed_candidates_only() -> None:
    """Off loopback the reachability rule keeps everything; the address rule (the pull
    sources' one) decides, and mDNS names are always dropped."""
    out = filtered(["10.0.0.5"], "10.0.0.0/8")
    assert "10.1.2.3" in out and "127.0.0.1" not in out and ".local" not in out
    assert "a=candidate" not in filtered([])
    assert not is_loopback_only([]) and is_loopback_only(["127.0.0.1", "::1"])


def test_use_host_addresses_replaces_and_restores_aioice_lookup() -> None:
    use_host_addresses([])
    original = aioice.ice.get_host_addresses
    try:
        use_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
        use_host_addresses([])
        assert aioice.ice.get_host_addresses is original
        with pytest.raises(ValueError):
            use_host_addresses(["not-an-ip"])
    finally:
        use_host_addresses(["127.0.0.1"])
