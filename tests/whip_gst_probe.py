"""Run GStreamer's webrtcbin against the real server over WHIP, across two network namespaces.

libnice (GStreamer's ICE agent) skips interfaces flagged LOOPBACK, so a client on ``lo``
has no candidate at all. ``test_whip_gstreamer.py`` therefore runs this script inside a
fresh network + mount namespace (``unshare --net --mount``) after building the topology of
``../shared/notes/whip-interop.md``: a veth pair to a second namespace, with 127.0.0.3 on
the server's end and 127.0.0.2 on the client's, ``route_localnet`` on. Nothing leaves
the namespaces.

The server is the real app (``create_app``) on 127.0.0.3 in this process; the client is
``drivers/gst_whip.py`` under the system Python in the client namespace. The detections
of the WHIP session are read server-side by a sink attached through the registry (until
SSE exists). Prints one JSON line: what the client said, the labels, the DTLS peer key
aiortc saw, whether the session and its UDP sockets were gone after the client's DELETE.

    python -m tests.whip_gst_probe MODEL --codec vp8 --certificate rsa
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from drivers.sinks import CollectingSink
from rtc_server.app import create_app
from rtc_server.config import Settings
from rtc_server.signaling.context import INFERENCE, REGISTRY
from rtc_server.webrtc import dtls
from tests.helpers import FIXTURES, ROOT, open_udp_sockets

SERVER, CLIENT = "127.0.0.3", "127.0.0.2"
CLIENT_NS = "issue-13-whip-c"


def setup_commands() -> list[str]:
    """Shell commands that build the topology (run as root inside ``unshare --net --mount``)."""
    sysctl = "sysctl -q -w net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.all.rp_filter=0"
    inside = " && ".join([
        "ip link set lo up", f"ip addr add {CLIENT}/32 dev vc", "ip link set vc up",
        f"ip route add {SERVER}/32 dev vc src {CLIENT}",
        f"{sysctl} net.ipv4.conf.vc.route_localnet=1 net.ipv4.conf.vc.rp_filter=0",
    ])
    return [
        "mkdir -p /run/netns", "mount -t tmpfs none /run/netns",  # private to this mount namespace
        f"ip netns add {CLIENT_NS}",
        "ip link add vs type veth peer name vc", f"ip link set vc netns {CLIENT_NS}",
        "ip link set lo up", f"ip addr add {SERVER}/32 dev vs", "ip link set vs up",
        f"ip route add {CLIENT}/32 dev vs src {SERVER}",
        f"{sysctl} net.ipv4.conf.vs.route_localnet=1 net.ipv4.conf.vs.rp_filter=0",
        f"ip netns exec {CLIENT_NS} sh -c '{inside}'",
    ]


async def probe(model: Path, codec: str, certificate: str, seconds: float, stock_dtls: bool = False) -> dict[str, Any]:
    settings = Settings(model=model, host=SERVER, port=8080, ice_addresses=(SERVER,),
                        ice_allow_networks=("127.0.0.0/8",),
                        data_dir=Path(tempfile.mkdtemp(prefix="rtc-probe-data-")))
    app = create_app(settings)
    if stock_dtls:  # the control: aiortc's own DTLS context, as before this project's fix
        dtls.use_dtls_interop(False)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, SERVER, 0)
    await site.start()
    port = runner.addresses[0][1]
    result: dict[str, Any] = {"codec": codec, "certificate": certificate}
    try:
        async with asyncio.timeout(60):
            while not app[INFERENCE].ready:
                await asyncio.sleep(0.05)
        udp_before = open_udp_sockets()
        dtls.PEER_KEYS.clear()
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", CLIENT_NS, "/usr/bin/python3", str(ROOT / "drivers" / "gst_whip.py"),
            f"http://{SERVER}:{port}/whip", "--image", str(FIXTURES / "bus.jpg"), "--seconds", str(seconds),
            "--codec", codec, "--certificate", certificate,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = time.perf_counter()
        sink = CollectingSink()
        registry = app[REGISTRY]
        async with asyncio.timeout(seconds + 30):
            while not (live := [s for s in registry if s.source_kind == "whip"]) and client.returncode is None:
                await asyncio.sleep(0.02)
            if live:
                live[0].add_sink(sink)
                try:
                    await sink.wait_for(5, timeout=seconds + 10)
                except TimeoutError:
                    pass
                result["session_udp_sockets"] = len(open_udp_sockets() - udp_before)
            stdout, stderr = await client.communicate()
        events = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
        detections = sink.detections
        result.update({
            "client_rc": client.returncode,
            "client_events": [e["event"] for e in events],
            "client_dtls": next((e for e in events if e["event"] == "dtls"), None),
            "client_stderr": stderr.decode()[-1500:],
            "detection_messages": len(detections),
            "first_detection_s": detections[0][0] - started if detections else None,
            "labels": sorted({d["label"] for _, m in detections for d in m["detections"]}),
            "size": [detections[-1][1]["width"], detections[-1][1]["height"]] if detections else None,
            "peer_keys": dict(dtls.PEER_KEYS),
            "sessions_after": len(registry),
            "udp_sockets_left": len(open_udp_sockets() - udp_before),
        })
    finally:
        await runner.cleanup()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--codec", default="vp8")
    parser.add_argument("--certificate", default="rsa")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--stock-dtls", action="store_true", help="without rtc_server.webrtc.dtls (control)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiortc.rtcdtlstransport").setLevel(logging.DEBUG)
    result = asyncio.run(probe(args.model, args.codec, args.certificate, args.seconds, args.stock_dtls))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
