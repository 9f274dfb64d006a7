"""GStreamer's webrtcbin as a WHIP client: a real third-party WebRTC stack (libnice ICE,
GStreamer's DTLS on the system OpenSSL) presenting its own certificate.

webrtcbin 1.22 presents an RSA-2048 DTLS certificate, and aiortc's own DTLS client offers
only ECDHE-ECDSA suites ("no shared cipher"); ``rtc_server.webrtc.dtls`` adds the ECDHE-RSA
AEAD suites. Both certificate kinds are tested from the same stack (``--certificate
ecdsa`` gives webrtcbin a P-256 one), plus the control: the stock aiortc context fails with
the RSA certificate. The client runs in a network namespace of its own
(``tests/whip_gst_probe.py``: libnice ignores loopback interfaces). Needs root, ``unshare``,
``ip`` and Debian's python3-gi + gstreamer1.0-plugins-{base,good,bad} + gstreamer1.0-nice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, cannot_run, require_root_tools
from tests.whip_gst_probe import setup_commands

pytestmark = pytest.mark.slow

GST_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); "
             "from gi.repository import Gst; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in "
             "('webrtcbin', 'nicesrc', 'dtlssrtpenc', 'vp8enc', 'x264enc', 'jpegdec', 'imagefreeze'))")


def run_probe(model: Path, *args: str) -> dict[str, Any]:
    require_root_tools("unshare", "ip", "sysctl", "openssl")
    if not Path("/usr/bin/python3").exists() or subprocess.run(["/usr/bin/python3", "-c", GST_CHECK],
                                                              capture_output=True).returncode != 0:
        cannot_run("needs /usr/bin/python3 with python3-gi and GStreamer's webrtc, nice, vpx, x264 plugins")
    command = " && ".join(setup_commands()) + ' && exec "$0" -m tests.whip_gst_probe "$@"'
    proc = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", command, sys.executable, str(model), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("codec", "certificate"), [("vp8", "rsa"), ("h264", "ecdsa")])
def test_gstreamer_webrtcbin_streams_over_whip(model_file: Path, codec: str, certificate: str) -> None:
    result = run_probe(model_file, "--codec", codec, "--certificate", certificate)
    assert result["client_rc"] == 0, result
    assert result["client_dtls"]["certificate"] == certificate and result["client_dtls"]["client"] is False, result
    assert result["peer_keys"] == {"RSA 2048" if certificate == "rsa" else "EC secp256r1": 1}, result
    assert {"bus", "person"} <= set(result["labels"]), result
    assert result["size"] == [640, 480]
    assert result["session_udp_sockets"] >= 1, result
    # the client's DELETE: no session left, its socket closed
    assert result["sessions_after"] == 0 and result["udp_sockets_left"] == 0, result


def test_without_the_dtls_fix_an_rsa_certificate_fails(model_file: Path) -> None:
    """The control: aiortc's own DTLS context (ECDSA suites only) against webrtcbin's RSA certificate."""
    result = run_probe(model_file, "--codec", "vp8", "--certificate", "rsa", "--seconds", "3", "--stock-dtls")
    assert result["client_rc"] != 0 and "failed" in result["client_events"], result
    assert result["detection_messages"] == 0 and result["sessions_after"] == 0, result
