"""RTC_UDP_PORTS and RTC_PUBLIC_ADDRESS: real servers' answers, and a session in the range."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
from collections.abc import Callable

import aiohttp
import aioice.ice
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection

from drivers.client import DetectionClient, ImageTrack
from rtc_server.config import ConfigError, Settings, load_settings
from rtc_server.signaling.context import REGISTRY
from rtc_server.webrtc.ice import advertise_address, rtc_configuration, use_host_addresses
from rtc_server.webrtc.portrange import bind_in_range, use_udp_ports

from .helpers import ServerFactory, ServerProcess, free_udp_range, require_root_tools, serve, wait_ready
from .sdp import make_offer
from .stub_detector import StubDetector, boxes


def host_candidates(sdp: str) -> list[tuple[str, int]]:
    return [(line.split()[4], int(line.split()[5])) for line in sdp.splitlines()
            if line.startswith("a=candidate:") and " typ host" in line]


def test_settings_parse_and_check_the_range() -> None:
    env = {"RTC_UDP_PORTS": "40000-40100", "RTC_PUBLIC_ADDRESS": "203.0.113.7"}
    settings = load_settings([], env)
    assert settings.udp_ports == (40000, 40100) and settings.public_address == "203.0.113.7"
    assert load_settings([], {"RTC_UDP_PORTS": "45000", "RTC_MAX_SESSIONS": "1"}).udp_ports == (45000, 45000)
    assert load_settings([], {}).udp_ports is None
    for bad in ("abc", "40100-40000", "80-90", "40000-70000"):
        with pytest.raises(ConfigError):
            load_settings([], {"RTC_UDP_PORTS": bad})
    with pytest.raises(ConfigError, match="public_address"):
        Settings(public_address="gce-vm.example")


def test_more_sessions_than_ports_is_refused_at_start(spawn: Callable[..., ServerProcess]) -> None:
    """One UDP port per session (and address): RTC_MAX_SESSIONS beyond the range would be
    accepted and then fail at ICE, 15 s later. The server refuses to start instead."""
    with pytest.raises(ConfigError, match="RTC_MAX_SESSIONS <= 3"):
        load_settings([], {"RTC_UDP_PORTS": "40000-40002", "RTC_MAX_SESSIONS": "10"})
    with pytest.raises(ConfigError, match="unlimited"):
        load_settings([], {"RTC_UDP_PORTS": "40000-40002", "RTC_MAX_SESSIONS": "0"})
    assert load_settings([], {"RTC_UDP_PORTS": "40000-40002", "RTC_MAX_SESSIONS": "3"}).max_sessions == 3
    server = spawn({"RTC_UDP_PORTS": "40000-40002", "RTC_MAX_SESSIONS": "10"})
    assert server.wait(60) == 2 and "needs more UDP ports" in server.log, server.log


async def test_an_offer_when_every_port_is_taken_is_503_at_once(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """Another program holds ports of the range: the offer that finds none free gets 503
    no_candidates at once (no answer the peer could never connect to)."""
    low, high = free_udp_range(2)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", high))
    app = stub_app(udp_ports=(low, high), max_sessions=2)
    try:
        url = await serve(aiohttp_server, app)
        sdp = await make_offer()
        async with aiohttp.ClientSession() as http:
            first = await http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"})
            second = await http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"})
            assert first.status == 200
            assert second.status == 503 and (await second.json())["error"] == "no_candidates"
            assert int(second.headers["Retry-After"]) >= 1
        assert len(app[REGISTRY]) == 1  # the refused offer holds no slot
    finally:
        squatter.close()
        await app[REGISTRY].close_all()


def test_bind_in_range_uses_the_range_and_reports_exhaustion() -> None:
    low, high = free_udp_range(2)
    first = bind_in_range("127.0.0.1", (low, high))
    second = bind_in_range("127.0.0.1", (low, high))
    try:
        assert {first.getsockname()[1], second.getsockname()[1]} == {low, high}
        with pytest.raises(OSError) as info:
            bind_in_range("127.0.0.1", (low, high))
        assert info.value.errno == errno.EADDRINUSE
    finally:
        first.close()
        second.close()


async def test_gathering_binds_every_host_candidate_in_range() -> None:
    """Many peer connections at once (concurrent gathers race for ports): all in range."""
    low, high = free_udp_range(12)
    use_host_addresses(["127.0.0.1"])
    use_udp_ports((low, high))
    pcs = [RTCPeerConnection(rtc_configuration([])) for _ in range(6)]
    try:
        for pc in pcs:
            pc.createDataChannel("x")
        await asyncio.gather(*(_gather(pc) for pc in pcs))
        ports = [p for pc in pcs for _, p in host_candidates(pc.localDescription.sdp)]
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs))
    assert len(ports) == 6 and len(set(ports)) == 6
    assert all(low <= p <= high for p in ports), ports


async def test_restoring_gives_aioice_its_own_binding() -> None:
    use_udp_ports((47000, 47010))
    assert aioice.ice.Connection.get_component_candidates.__module__ == "rtc_server.webrtc.portrange"
    use_udp_ports(None)
    assert aioice.ice.Connection.get_component_candidates.__module__ == "aioice.ice"


async def test_session_works_with_ports_in_range(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    low, high = free_udp_range(10)
    server = await aiohttp_server(stub_app(udp_ports=(low, high), max_sessions=10), host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    await wait_ready(url)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        message = await client.next_message()
        answer = client.pc.remoteDescription.sdp
    finally:
        await client.close()
    assert boxes(message["detections"]) == [d.to_dict() for d in StubDetector().detections(640, 480)]
    ports = [p for _, p in host_candidates(answer)]
    assert ports and all(low <= p <= high for p in ports), ports


async def test_public_address_replaces_host_candidates_in_the_answer(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    low, high = free_udp_range(4)
    app = stub_app(udp_ports=(low, high), max_sessions=4, public_address="203.0.113.7")
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    await wait_ready(url)
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.createDataChannel("detections")
    pc.addTransceiver("video", direction="sendonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
            f"{url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}
        ) as response:
            assert response.status == 200
            answer = (await response.json())["sdp"]
    finally:
        await pc.close()
    candidates = host_candidates(answer)
    assert candidates and all(host == "203.0.113.7" and low <= port <= high for host, port in candidates)
    assert "127.0.0.1" not in answer  # the c= line follows the default candidate


def test_advertise_address_rewrites_only_host_candidates_of_its_family() -> None:
    sdp = "\r\n".join([
        "v=0", "m=video 40001 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 10.128.0.5",
        "a=candidate:1 1 udp 2130706431 10.128.0.5 40001 typ host",
        "a=candidate:2 1 udp 2130706431 fd00::5 40002 typ host",
        "a=candidate:3 1 udp 1694498815 34.1.2.3 40001 typ srflx raddr 10.128.0.5 rport 40001",
        "a=candidate:4 1 udp 2130706431 abcd.local 40003 typ host",
    ]) + "\r\n"
    out = advertise_address(sdp, "34.1.2.3")
    assert "a=candidate:1 1 udp 2130706431 34.1.2.3 40001 typ host" in out
    assert "fd00::5 40002" in out and "abcd.local" in out and "raddr 10.128.0.5" in out
    assert "c=IN IP4 34.1.2.3" in out and "c=IN IP4 10.128.0.5" not in out
    assert advertise_address(sdp, "") == sdp


async def _gather(pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())


GATHER_SCRIPT = """
import asyncio
from aiortc import RTCConfiguration, RTCPeerConnection
from rtc_server.webrtc.ice import use_host_addresses
use_host_addresses(["127.0.0.1"])
async def main():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("x")
    await pc.setLocalDescription(await pc.createOffer())
    print(pc.localDescription.sdp)
    await pc.close()
asyncio.run(main())
"""


def test_ip_local_port_range_alternative_in_own_namespace() -> None:
    """The documented alternative: without RTC_UDP_PORTS, a namespace's ephemeral range."""
    require_root_tools("unshare", "ip", "sysctl")
    script = (f'ip link set lo up && sysctl -qw net.ipv4.ip_local_port_range="41000 41010" && '
              f'exec {sys.executable} -c "$0"')
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script, GATHER_SCRIPT],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ports = [p for _, p in host_candidates(proc.stdout)]
    assert ports and all(41000 <= p <= 41010 for p in ports), ports
