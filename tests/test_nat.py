"""RTC_PUBLIC_ADDRESS through a real 1:1 NAT: a network namespace with an iptables DNAT.

As on a GCE VM, the server only sees its private address; peers reach it through an
external address that the network translates. The namespace (``unshare --net``) holds
the private address on ``lo``, a DNAT from the external address to it, and a rule that
drops direct UDP to the server's port range — so a session works only if the answer
advertises the external address. Needs root, ``unshare`` and ``iptables``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, require_root_tools
from tests.nat_probe import PRIVATE, PUBLIC, UDP_PORTS

pytestmark = pytest.mark.slow

SETUP = " && ".join([
    "ip link set lo up",
    f"ip addr add {PRIVATE}/32 dev lo",
    f"ip route add {PUBLIC}/32 dev lo",
    f"iptables -t nat -A OUTPUT -d {PUBLIC} -j DNAT --to-destination {PRIVATE}",
    f"iptables -A OUTPUT -p udp -d {PRIVATE} --dport {UDP_PORTS.replace('-', ':')} "
    "-m conntrack ! --ctstate DNAT -j DROP",
])


def run_probe(model: Path, public: str) -> dict[str, Any]:
    require_root_tools("unshare", "iptables", "ip")
    command = f'{SETUP} && exec "$0" -m tests.nat_probe "$1" 8080 "$2"'
    proc = subprocess.run(["unshare", "--net", "sh", "-c", command, sys.executable, str(model), public],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_public_address_makes_the_session_work_through_nat(model_file: Path) -> None:
    result = run_probe(model_file, PUBLIC)
    assert result["connected"], result
    assert {"bus", "person"} <= set(result["labels"]), result
    assert result["answer_hosts"] and all(h.startswith(PUBLIC + " ") for h in result["answer_hosts"])


def test_without_it_the_private_address_is_unreachable(model_file: Path) -> None:
    """The control: the same NAT, no RTC_PUBLIC_ADDRESS -> the session cannot connect."""
    result = run_probe(model_file, "")
    assert not result["connected"], result
    assert result["answer_hosts"] and all(h.startswith(PRIVATE + " ") for h in result["answer_hosts"])
