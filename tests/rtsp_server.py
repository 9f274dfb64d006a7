"""A real RTSP server for the pull-source tests: GStreamer's gst-rtsp-server.

Run with the system Python (``/usr/bin/python3``), which has PyGObject (``python3-gi``);
the project's venv has not. It serves ``IMAGE`` as live H.264 at ``rtsp://127.0.0.1:PORT/bus``
and prints ``READY <port>`` once it listens (``--port 0`` picks a free port). It stops on
SIGTERM/SIGINT. Kept free of project imports on purpose.

    /usr/bin/python3 tests/rtsp_server.py --image tests/fixtures/bus.jpg --port 0
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def pipeline(image: str, width: int, height: int, fps: int) -> str:
    """bus.jpg, decoded once and repeated as a live stream, H.264 one keyframe a second."""
    return (
        f'( filesrc location="{image}" ! jpegdec ! videoconvert ! videoscale '
        f"! imagefreeze is-live=true ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1000 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--width", type=int, default=540)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args.image, args.width, args.height, args.fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/bus", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
