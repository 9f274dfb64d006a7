"""FFmpeg's WHIP muxer as a test/bench client: stream an image as live H.264 to ``/whip``.

The muxer ships inside the PyAV wheel (``av.open(url, mode="w", format="whip")``). Its
network I/O holds the GIL, so it runs in a process of its own::

    python -m drivers.ffmpeg_whip http://127.0.0.1:8080/whip --image bus.jpg --seconds 10 \\
        [--token T] [--cert-file cert.pem --key-file key.pem] [--timeline out.json]

It encodes 640x480 frames with libx264 (``tune=zerolatency``, no B-frames, a keyframe a
second) and hands each packet to the muxer at the frame's due time, like ``ffmpeg -re``.
The muxer does the whole WHIP exchange on the first packet: POST, ICE, DTLS — then sends
RTP, and DELETEs the session URL when closed.

Frame ``i`` has pts ``i`` in a ``1/fps`` time base; the muxer sends it with RTP timestamp
``i * 90000 / fps`` (plus a random origin), and aiortc hands the server a pts relative to
the first frame, so the server's ``pts // (90000 // fps)`` is the frame index. The timeline
(``--timeline``) maps each index to the ``time.perf_counter()`` moment its packet was
handed to the muxer — the same clock (CLOCK_MONOTONIC) as any other process here, so a
receiver can match each detection to its frame. Lines on stdout: ``{"event": ...}`` JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

VIDEO_CLOCK = 90_000


def camera_frame(image: Path, width: int = 640, height: int = 480) -> np.ndarray:
    """``image`` letterboxed into a ``width`` x ``height`` RGB frame (the tests' bus frame)."""
    bgr = cv2.imread(str(image))
    if bgr is None:
        raise SystemExit(f"cannot read {image}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    scale = min(height / h, width / w)
    resized = cv2.resize(rgb, (round(w * scale), round(h * scale)))
    frame = np.zeros((height, width, 3), np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return frame


def write_certificate(directory: Path, curve: ec.EllipticCurve | None = None) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate + key (PEM files) for the muxer's ``cert_file``/``key_file``.

    P-256 by default: what FFmpeg's OpenSSL backend generates itself, and what the server's
    DTLS stack accepts (PyAV's FFmpeg, built with GnuTLS, generates P-224; docs/whip.md).
    """
    key = ec.generate_private_key(curve or ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ffmpeg-whip")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "whip-cert.pem", directory / "whip-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.perf_counter(), **fields}), flush=True)


def stream(url: str, frame: np.ndarray, *, fps: int = 30, seconds: float = 10.0, token: str | None = None,
           cert_file: str | None = None, key_file: str | None = None) -> dict[int, float]:
    """Send ``frame`` for ``seconds``; returns ``{frame index: perf_counter when muxed}``."""
    options = {"handshake_timeout": "10000"}
    if token:
        options["authorization"] = token
    if cert_file and key_file:
        options["cert_file"], options["key_file"] = cert_file, key_file
    container = av.open(url, mode="w", format="whip", options=options)
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height = frame.shape[1], frame.shape[0]
    video.pix_fmt = "yuv420p"
    video.time_base = Fraction(1, fps)
    # constrained baseline (what WebRTC peers decode), no B-frames, a keyframe a second
    video.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "bf": "0",
                     "g": str(fps), "keyint_min": str(fps)}
    sent: dict[int, float] = {}
    total = round(seconds * fps)
    emit("start", url=url, frames=total)
    start = time.perf_counter()
    try:
        for index in range(total):
            delay = start + index / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            picture.time_base = Fraction(1, fps)
            for packet in video.encode(picture):
                container.mux(packet)
            sent[index] = time.perf_counter()
            if index == 0:
                emit("connected", setup_s=sent[0] - start)
                start = sent[0]  # pace from here: the first mux did the whole handshake
        for packet in video.encode(None):
            container.mux(packet)
    finally:
        container.close()  # the muxer DELETEs its session URL
        emit("closed", frames=len(sent))
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--token")
    parser.add_argument("--cert-file")
    parser.add_argument("--key-file")
    parser.add_argument("--timeline", type=Path, help="write {index: perf_counter} JSON here")
    args = parser.parse_args(argv)
    try:
        sent = stream(args.url, camera_frame(args.image), fps=args.fps, seconds=args.seconds, token=args.token,
                      cert_file=args.cert_file, key_file=args.key_file)
    except (av.FFmpegError, OSError) as exc:
        emit("failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    if args.timeline:
        args.timeline.write_text(json.dumps({"fps": args.fps, "sent": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
