"""TURN with short-lived credentials (RTC_TURN_SECRET), proven against a real coturn.

Everything runs in a private network namespace that has only loopback: coturn with
``use-auth-secret``, the server as its own process, and an aiortc client that gathers
*relay candidates only* (no host address at all: what a browser does with
``iceTransportPolicy: "relay"``). An iptables rule in the namespace drops UDP to the
server's ports unless it comes from coturn's relay ports, so the media can only flow
through the relay. The client takes its TURN credential from ``GET /ice-servers``, as the
page does; the server's own session gets its own. coturn itself refuses an expired or a
forged credential (401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aioice.ice
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.config import ConfigError, Settings, load_settings
from rtc_server.webrtc.turn import ice_servers, turn_credential
from rtc_server.wiring import ice_server_config

from .browser_env import loopback_only_network
from .coturn import Coturn, close_allocation, loopback_config, missing
from .helpers import ClientFactory, ServerProcess, cannot_run, free_port, http_get, require_root_tools

pytestmark = pytest.mark.slow

SECRET = "turn-secret-for-tests"
TURN_PORT = 3478  # the namespace is new: nothing else listens there
RELAY_PORTS = (49160, 49200)
SERVER_UDP = (31200, 31219)


def test_credentials_follow_the_turn_rest_scheme() -> None:
    username, credential = turn_credential("s3cret", "page-1", ttl=600, now=1_700_000_000)
    assert username == "1700000600:page-1"
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected
    settings = Settings(ice_servers=({"urls": "stun:stun.example:3478"},), turn_secret="s3cret",
                        turn_urls=("turn:turn.example:3478", "turns:turn.example:5349?transport=tcp"), turn_ttl=60)
    servers = ice_servers(ice_server_config(settings), "session-x", static_credentials=False)
    assert servers[0] == {"urls": "stun:stun.example:3478"}
    assert servers[1]["urls"] == list(settings.turn_urls)
    expiry, user = servers[1]["username"].split(":")
    assert user == "session-x" and 0 < int(expiry) - time.time() <= 60
    assert "s3cret" not in repr(settings)
    for env in ({"RTC_TURN_SECRET": "x"}, {"RTC_TURN_URLS": "turn:a:3478"},
                {"RTC_TURN_SECRET": "x", "RTC_TURN_URLS": "stun:a:3478"},
                {"RTC_TURN_SECRET": "x", "RTC_TURN_URLS": "turn:a:3478", "RTC_TURN_TTL": "0"}):
        with pytest.raises(ConfigError):
            load_settings([], env)


async def test_ice_servers_route_hands_each_page_its_own_credential(
    aiohttp_client: ClientFactory, make_app: Callable[..., web.Application]
) -> None:
    c = await aiohttp_client(make_app(turn_secret=SECRET, turn_urls=("turn:turn.example:3478",), turn_ttl=120))
    answers = [await (await c.get("/ice-servers")).json() for _ in range(2)]
    first, second = (a["ice_servers"][-1] for a in answers)
    assert first["username"] != second["username"]  # one per page
    for server in (first, second):
        digest = hmac.new(SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
        assert server["credential"] == base64.b64encode(digest).decode()
        assert int(server["username"].split(":")[0]) <= time.time() + 120
    assert (await c.get("/ice-servers")).headers["Cache-Control"] == "no-store"


@pytest.fixture
def namespace() -> Iterator[None]:
    require_root_tools("ip", "iptables")
    reason = missing()
    if reason:
        cannot_run(reason)
    try:
        with loopback_only_network():
            yield
    except PermissionError as exc:
        cannot_run(f"no private network namespace: {exc}")


@pytest.fixture
def coturn(namespace: None, tmp_path: Path) -> Iterator[Coturn]:
    folder = tmp_path / "coturn"
    folder.mkdir()
    server = Coturn(loopback_config(SECRET, TURN_PORT, folder, RELAY_PORTS), folder, TURN_PORT).start()
    yield server
    server.stop()


async def test_coturn_refuses_expired_and_forged_credentials(coturn: Coturn) -> None:
    username, credential = turn_credential(SECRET, "probe", ttl=60)
    protocol = await coturn.allocate(username, credential)
    host, port = protocol.relayed_address
    assert host == "127.0.0.1" and RELAY_PORTS[0] <= port <= RELAY_PORTS[1]
    await close_allocation(protocol)
    expired = turn_credential(SECRET, "probe", ttl=-60)  # expired a minute ago
    forged = turn_credential("not-the-secret", "probe", ttl=60)
    tampered = (username.replace("probe", "other"), credential)  # the HMAC no longer matches
    for name, (user, password) in {"expired": expired, "forged": forged, "tampered": tampered}.items():
        assert await coturn.refusal(user, password) == 401, name
    log = coturn.log
    assert f"user <{username}>: incoming packet ALLOCATE processed, success" in log, log[-3000:]
    for user, _ in (expired, forged, tampered):  # coturn's own verdict, in its own log
        assert f"user <{user}>: incoming packet message processed, error 401: Unauthorized" in log, log[-3000:]


def _block_direct_udp_to_the_server() -> None:
    """Drop UDP to the server's ports unless it comes from coturn's relay ports."""
    rule = ["INPUT", "-p", "udp", "--dport", f"{SERVER_UDP[0]}:{SERVER_UDP[1]}",
            "!", "--sport", f"{RELAY_PORTS[0]}:{RELAY_PORTS[1]}", "-j", "DROP"]
    subprocess.run(["iptables", "-A", *rule], check=True)


async def test_without_the_relay_the_blocked_path_does_not_connect(
    coturn: Coturn, model_file: Path, bus_frame: np.ndarray, tmp_path: Path
) -> None:
    """The control: the same namespace and rule, no TURN anywhere -> no session. So the
    relay test below connects through coturn or not at all."""
    _block_direct_udp_to_the_server()
    server = ServerProcess(tmp_path / "server.log", {
        "RTC_MODEL": str(model_file), "RTC_UDP_PORTS": f"{SERVER_UDP[0]}-{SERVER_UDP[1]}"}, port=free_port()).start()
    try:
        client = DetectionClient(server.url, ImageTrack(bus_frame, fps=15))
        try:
            with pytest.raises(TimeoutError):
                await client.connect(timeout=10)
        finally:
            await client.close()
    finally:
        server.stop()


async def test_relay_only_client_gets_detections_through_coturn(
    coturn: Coturn, model_file: Path, bus_frame: np.ndarray, tmp_path: Path
) -> None:
    _block_direct_udp_to_the_server()
    turn_url = f"turn:127.0.0.1:{TURN_PORT}?transport=udp"
    server = ServerProcess(tmp_path / "server.log", {
        "RTC_MODEL": str(model_file), "RTC_TURN_SECRET": SECRET, "RTC_TURN_URLS": turn_url, "RTC_TURN_TTL": "300",
        "RTC_UDP_PORTS": f"{SERVER_UDP[0]}-{SERVER_UDP[1]}", "RTC_LOG_FORMAT": "json"}, port=free_port()).start()
    try:
        status, body = http_get(server.url + "/ice-servers")
        assert status == 200
        servers = json.loads(body)["ice_servers"]
        (turn,) = servers
        assert turn["urls"] == [turn_url] and turn["username"].split(":")[1].startswith("page-")
        # Relay only: this client offers no host address at all, so every packet it sends
        # goes through its TURN allocation (restored after the test by conftest).
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: []
        client = DetectionClient(server.url, ImageTrack(bus_frame, fps=15), ice_servers=servers)
        try:
            await client.connect(timeout=30)
            message = await client.next_message(timeout=30)
            offered = [ln for ln in client.pc.localDescription.sdp.splitlines() if ln.startswith("a=candidate:")]
        finally:
            await client.close()
        assert {"bus", "person"} <= {d["label"] for d in message["detections"]}
        assert offered and all(" typ relay " in ln for ln in offered), offered
        log = coturn.log
        page_user = re.escape(turn["username"])
        assert re.search(rf"user <{page_user}>: incoming packet ALLOCATE processed, success", log), log[-3000:]
        # The server's session allocated with a credential of its own, named after the session.
        assert re.search(rf"user <\d+:{client.session_id}>: incoming packet ALLOCATE processed, success", log), \
            log[-3000:]
        assert re.search(rf"user <{page_user}>: incoming packet (CREATE_PERMISSION|CHANNEL_BIND) processed, success",
                         log), log[-3000:]
    finally:
        server.stop()
