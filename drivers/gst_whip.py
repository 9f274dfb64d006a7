#!/usr/bin/python3
"""A WHIP client built on GStreamer's own WebRTC stack (webrtcbin + libnice + its DTLS).

Runs under the system Python (``/usr/bin/python3``: Debian's python3-gi with
``gi.repository.Gst``/``GstWebRTC``/``GstSdp``), standard library only otherwise, so it
is a third-party peer in every sense that matters: its ICE agent (libnice), DTLS
(GStreamer's dtls elements over the system OpenSSL, RSA-2048 certificate by default) and
RTP stack are not aiortc's::

    /usr/bin/python3 drivers/gst_whip.py http://127.0.0.3:8080/whip --image bus.jpg \\
        --seconds 6 [--codec vp8|h264] [--certificate rsa|ecdsa] [--token T]

image -> letterboxed 640x480 at 30 fps -> VP8 or H.264 (constrained baseline) -> webrtcbin.
Non-trickle, like ``simple-whip-client -n``: the offer is POSTed once ICE gathering is
complete; the 201's answer is applied; after ``--seconds`` the session URL is DELETEd.
``--certificate ecdsa`` replaces the DTLS certificate webrtcbin generates (RSA) with an
ECDSA P-256 one made by ``openssl`` (on webrtcbin's DTLS decoder as it is created, and
its fingerprint in the offer), so both certificate kinds come from the same stack.
Progress is printed as JSON lines (``{"event": ...}``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

ENCODERS = {
    "vp8": "vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! "
           "application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 ! "
            "video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 config-interval=-1 "
            "aggregate-mode=zero-latency ! application/x-rtp,media=video,encoding-name=H264,payload=102",
}


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def ecdsa_certificate() -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate + key (PEM, as GStreamer's dtls wants them) and
    its SHA-256 fingerprint as SDP writes it."""
    with tempfile.TemporaryDirectory(prefix="gst-whip-") as tmp:
        key, cert = Path(tmp, "key.pem"), Path(tmp, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=gst-whip"],
                       check=True, capture_output=True)
        printed = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                                 check=True, capture_output=True, text=True).stdout
        return cert.read_text() + key.read_text(), printed.strip().split("=", 1)[1]


class WhipClient:
    def __init__(self, url: str, image: Path, codec: str, token: str | None, certificate: str) -> None:
        self.url, self.token = url, token
        self.location: str | None = None
        self.failed: str | None = None
        self.loop = GLib.MainLoop()
        self._certificate = ecdsa_certificate() if certificate == "ecdsa" else None
        self.pipeline = Gst.parse_launch(
            f'filesrc location="{image}" ! jpegdec ! videoconvert ! videoscale add-borders=true ! '
            "video/x-raw,width=640,height=480,pixel-aspect-ratio=1/1 ! imagefreeze is-live=true ! "
            f"video/x-raw,framerate=30/1 ! videoconvert ! queue ! {ENCODERS[codec]} ! "
            "webrtcbin name=webrtc bundle-policy=max-bundle"
        )
        self.webrtc = self.pipeline.get_by_name("webrtc")
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        self.webrtc.connect("deep-element-added", self._on_element)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)

    # ----- webrtcbin -------------------------------------------------------------------------
    def _on_element(self, _bin: Gst.Bin, _sub: Gst.Bin, element: Gst.Element) -> None:
        factory = element.get_factory()
        if self._certificate is not None and factory is not None and factory.get_name() == "dtlsdec":
            # while create-offer builds the transport, before its DTLS connection exists
            element.set_property("pem", self._certificate[0])

    def _on_negotiation_needed(self, element: Gst.Element) -> None:
        self._create_offer(element, attempt=1)

    def _create_offer(self, element: Gst.Element, attempt: int) -> bool:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(self._on_offer, element, attempt))
        return False  # (as a GLib timeout: once)

    def _on_offer(self, promise: Gst.Promise, element: Gst.Element, attempt: int) -> None:
        promise.wait()
        reply = promise.get_reply()  # keep it referenced: the offer below belongs to it
        offer = reply.get_value("offer")
        if offer is None:
            # webrtcbin answers NULL while its sink pad's caps are not yet fixed (the first
            # decoded picture is still on its way): ask again shortly
            if attempt >= 50:
                self._fail("webrtcbin could not create an offer")
            else:
                GLib.timeout_add(100, self._create_offer, element, attempt + 1)
            return
        if self._certificate is not None:
            offer = self._with_fingerprint(offer, self._certificate[1])
        element.emit("set-local-description", offer, Gst.Promise.new())

    @staticmethod
    def _with_fingerprint(offer: GstWebRTC.WebRTCSessionDescription,
                          fingerprint: str) -> GstWebRTC.WebRTCSessionDescription:
        """The offer with our certificate's fingerprint: webrtcbin took the one of the
        certificate it generated before ``_on_element`` replaced it."""
        lines = [f"a=fingerprint:sha-256 {fingerprint}" if line.startswith("a=fingerprint:") else line
                 for line in offer.sdp.as_text().splitlines()]
        _, message = GstSdp.SDPMessage.new_from_text("\r\n".join(lines) + "\r\n")
        return GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, message)

    def _on_gathering(self, element: Gst.Element, _pspec: object) -> None:
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            # HTTP off the streaming thread; the answer goes back through webrtcbin's own queue
            threading.Thread(target=self._post_offer, daemon=True).start()

    def _on_connection_state(self, element: Gst.Element, _pspec: object) -> None:
        state = element.get_property("connection-state")
        emit("connection", state=state.value_nick)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            transport = element.emit("get-transceiver", 0).get_property("receiver").get_property("transport")
            pem = transport.get_property("certificate") or ""
            kind = "ecdsa" if self._certificate is not None and pem == self._certificate[0] else "rsa"
            emit("dtls", certificate=kind, client=transport.get_property("client"))
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self._fail("the peer connection failed")

    def _on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        self._fail(f"{error.message} ({debug})")

    def _fail(self, why: str) -> None:
        self.failed = why
        emit("failed", error=why)
        GLib.idle_add(self.loop.quit)

    # ----- WHIP over HTTP ----------------------------------------------------------------------
    def _request(self, method: str, url: str, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def _post_offer(self) -> None:
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        emit("post", candidates=sdp.count("a=candidate:"))
        try:
            status, headers, body = self._request("POST", self.url, sdp.encode(), "application/sdp")
        except OSError as exc:
            self._fail(f"POST failed: {exc}")
            return
        if status != 201:
            self._fail(f"POST answered {status}: {body[:300]!r}")
            return
        self.location = urllib.parse.urljoin(self.url, headers["Location"])
        emit("answered", location=self.location, etag=headers.get("ETag"))
        _, message = GstSdp.SDPMessage.new_from_text(body.decode())
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        GLib.idle_add(lambda: self.webrtc.emit("set-remote-description", answer, Gst.Promise.new()) and False)

    def delete(self) -> int | None:
        if self.location is None:
            return None
        try:
            status, _, _ = self._request("DELETE", self.location)
        except OSError as exc:
            emit("failed", error=f"DELETE failed: {exc}")
            return None
        emit("deleted", status=status)
        return status

    def run(self, seconds: float) -> int:
        self.pipeline.set_state(Gst.State.PLAYING)
        GLib.timeout_add(int(seconds * 1000), self.loop.quit)
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        status = self.delete()
        return 0 if self.failed is None and status == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="vp8")
    parser.add_argument("--certificate", choices=("rsa", "ecdsa"), default="rsa",
                        help="rsa: webrtcbin's own; ecdsa: a P-256 one")
    parser.add_argument("--token")
    args = parser.parse_args(argv)
    Gst.init(None)
    return WhipClient(args.url, args.image.resolve(), args.codec, args.token, args.certificate).run(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
