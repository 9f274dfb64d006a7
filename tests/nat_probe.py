"""Run inside a fresh network namespace that emulates a GCE VM's 1:1 NAT (see test_nat.py).

The namespace has the VM's private address ``PRIVATE`` on ``lo`` and an iptables DNAT
from ``PUBLIC`` to it; direct UDP to the server's port range on ``PRIVATE`` is dropped, so
media can only arrive through the "external" address, as on GCE. This script starts the
real server (``python -m rtc_server``, its own process) with the given settings, connects
a ``DetectionClient`` and prints one JSON line: connected or not, the answer's host
candidates, the labels of the first detection message.

    python -m tests.nat_probe MODEL PORT PUBLIC_ADDRESS_OR_EMPTY
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import cv2
import numpy as np

from drivers.client import DetectionClient, ImageTrack
from rtc_server.webrtc.ice import use_host_addresses
from tests.helpers import FIXTURES, wait_ready_sync

PRIVATE = "10.99.0.2"
PUBLIC = "203.0.113.7"
UDP_PORTS = "31100-31139"


def frame() -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(FIXTURES / "bus.jpg")), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (480, 640))[80:560]  # a 480x480 crop with the bus and people


async def probe(url: str) -> dict[str, Any]:
    use_host_addresses([PRIVATE])
    client = DetectionClient(url, ImageTrack(np.ascontiguousarray(frame()), fps=15))
    result: dict[str, Any] = {"connected": False}
    try:
        await client.connect(timeout=10)
        result["answer_hosts"] = [
            " ".join(line.split()[4:6]) for line in client.pc.remoteDescription.sdp.splitlines()
            if line.startswith("a=candidate:") and " typ host" in line
        ]
        message = await client.next_message(timeout=20)
        result.update(connected=True, labels=sorted({d["label"] for d in message["detections"]}))
    except (TimeoutError, RuntimeError) as exc:
        result["error"] = repr(exc)
        if client.pc.remoteDescription is not None:
            result["answer_hosts"] = [
                " ".join(line.split()[4:6]) for line in client.pc.remoteDescription.sdp.splitlines()
                if line.startswith("a=candidate:") and " typ host" in line
            ]
    finally:
        await client.close()
    return result


def main() -> int:
    model, port, public = sys.argv[1], sys.argv[2], sys.argv[3]
    env = {**os.environ, "RTC_MODEL": model, "PORT": port, "RTC_HOST": "127.0.0.1",
           "RTC_ICE_ADDRESSES": PRIVATE,
           "RTC_ICE_ALLOW_NETWORKS": f"{PRIVATE}/24,{PUBLIC}/24,127.0.0.0/8", "RTC_UDP_PORTS": UDP_PORTS,
           "RTC_PUBLIC_ADDRESS": public}
    server = subprocess.Popen([sys.executable, "-m", "rtc_server"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready_sync(url, lambda: server.poll() is None)
        print(json.dumps(asyncio.run(probe(url))))
    finally:
        server.terminate()
        server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
