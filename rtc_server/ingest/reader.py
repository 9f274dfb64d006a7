"""One connection of a pull source, run in the source's own thread: open the URL with PyAV,
demux its first video stream, decode, pace, and hand each frame over.

Everything here blocks, which is why it never runs on the event loop: opening waits on the
network, and decoding is CPU work (PyAV releases the GIL while FFmpeg decodes, so the loop
and the inference thread carry on). ``run`` returns when the connection ends — the source
reached its end, failed, or ``stop`` was set — with a ``ConnectionResult`` saying which;
reconnecting is the caller's business (``source``).

How a URL is opened, per scheme (``open_input``):

- ``rtsp``/``rtsps``: the host pinned to a checked address; RTP interleaved over the RTSP
  TCP connection (``rtsp_transport=tcp``: no UDP ports to open, nothing lost to NAT or
  packet loss) and only the video track set up; low-latency flags (``fflags=nobuffer``,
  ``flags=low_delay``), a small probe (``probesize``, ``analyzeduration``); FFmpeg may open
  ``tcp`` (``tls`` for rtsps) and nothing else.
- ``http``/``https``: every request made by ``http_io.HttpOpener`` (PyAV ``io_open``);
  ``http_persistent=0`` because FFmpeg's HLS connection reuse assumes its own HTTP client.
- ``srt``: pinned like RTSP; only ``srt`` (and ``udp`` under it) may be opened.
- ``file``: only ``file`` may be opened (an HLS playlist on disk cannot reach the network).

RTSP's socket timeout is FFmpeg's ``timeout`` option in microseconds: FFmpeg 5 renamed it
from ``stimeout`` (which FFmpeg 8, in PyAV 18's wheel, no longer has); ``rw_timeout`` is
the generic protocol option, not needed since the interrupt callback bounds every read.
Every scheme gets PyAV's open/read timeouts (FFmpeg's interrupt callback, which covers
every protocol) and a demuxer allow-list (``format_whitelist``: no ``concat`` script, no
``sdp`` that opens arbitrary UDP ports, no image sequence reading local files).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from .http_io import HttpOpener, HttpStatusError
from .policy import ResolveError, SourcePolicy, SourceUrl, UrlRefused

log = logging.getLogger(__name__)

#: Demuxers a pull source may turn out to be (FFmpeg ``format_whitelist``).
FORMATS = "rtsp,hls,mpegts,mov,matroska,flv,avi,h264,hevc,mjpeg,mpjpeg,aac,mp3"
#: Low-latency demuxing for live sources: do not buffer, probe little.
LIVE_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "262144", "analyzeduration": "500000"}
#: A file played at its own rate falls behind by more than this: jump to now, never catch up.
MAX_PACING_LAG = 0.5


class NoVideoStream(Exception):
    """The source opened but has no video stream."""


@dataclass(frozen=True)
class Timeouts:
    open: float
    read: float


@dataclass(frozen=True)
class OpenedInfo:
    """What the source turned out to be, once open."""

    format: str
    codec: str
    width: int
    height: int
    #: The source has an end (a file, a VOD playlist) rather than being live.
    finite: bool
    #: The address connected to (pinned), if the scheme has one.
    address: str | None


@dataclass
class ConnectionResult:
    opened: bool = False
    finite: bool = False
    #: The source reached its end (rather than failing or being stopped).
    ended: bool = False
    frames: int = 0
    error: BaseException | None = None
    #: Set when the policy refused something this connection tried to reach.
    refused: UrlRefused | None = None


FrameSink = Callable[[av.VideoFrame, int | None], None]


class Connection:
    """One attempt at reading a source, from open to its end. Not reusable."""

    def __init__(self, url: SourceUrl, policy: SourcePolicy, timeouts: Timeouts, stop: threading.Event,
                 on_open: Callable[[OpenedInfo], None], on_frame: FrameSink) -> None:
        self._url = url
        self._policy = policy
        self._timeouts = timeouts
        self._stop = stop
        self._on_open = on_open
        self._on_frame = on_frame
        self._opener: HttpOpener | None = None

    def abort(self) -> None:
        """From any thread, after setting ``stop``: unblock a pending HTTP read now."""
        if self._opener is not None:
            self._opener.abort()

    def run(self) -> ConnectionResult:
        result = ConnectionResult()
        container: av.container.InputContainer | None = None
        try:
            container, info = self._open()
            result.opened, result.finite = True, info.finite
            self._on_open(info)
            result.ended = self._drain(container, info, result)
        except Exception as exc:  # every failure is an outcome: the caller decides what next
            result.error = exc
            if isinstance(exc, UrlRefused):
                result.refused = exc
        finally:
            if container is not None:
                container.close()
            if self._opener is not None:
                self._opener.close_all()
                if self._opener.refusals and result.refused is None:
                    result.refused = self._opener.refusals[0]
        return result

    # ----- open ------------------------------------------------------------------------------
    def _open(self) -> tuple[av.container.InputContainer, OpenedInfo]:
        url, timeouts = self._url, self._timeouts
        options: dict[str, str] = {"format_whitelist": FORMATS}
        io_open = None
        address = None
        if url.scheme in ("rtsp", "rtsps"):
            address = self._policy.resolve(url)[0]
            target = url.pinned(address)
            options |= LIVE_OPTIONS | {
                "rtsp_transport": "tcp", "allowed_media_types": "video",
                "timeout": str(int(timeouts.read * 1e6)),  # socket I/O, microseconds
                "protocol_whitelist": "tls,tcp" if url.scheme == "rtsps" else "tcp",
            }
        elif url.scheme == "srt":
            require_protocol("srt")
            address = self._policy.resolve(url)[0]
            target = url.pinned(address)
            options |= LIVE_OPTIONS | {"protocol_whitelist": "srt,udp"}
        elif url.scheme in ("http", "https"):
            self._opener = io_open = HttpOpener(self._policy, timeouts.open, timeouts.read)
            target = url.url
            options |= {"http_persistent": "0", "protocol_whitelist": "http,https,tcp,tls"}
        else:  # file, allowed by the policy's parse
            target = "file:" + url.target
            if not Path(url.target).is_file():
                raise FileNotFoundError(f"no file {url.target}")
            options |= {"protocol_whitelist": "file"}
        started = time.monotonic()
        try:
            container = av.open(target, options=options, timeout=(timeouts.open, timeouts.read), io_open=io_open)
        except (av.error.InvalidDataError, av.error.ExitError, TimeoutError) as exc:
            # FFmpeg reports an RTSP server that never answers as invalid data; what happened is
            # that the open timeout ran out (PyAV's interrupt, or FFmpeg's socket timeout).
            if time.monotonic() - started >= min(timeouts.open, timeouts.read) * 0.95:
                raise TimeoutError(f"no answer within {timeouts.open:g} s ({describe(exc)})") from exc
            raise
        try:
            if not container.streams.video:
                raise NoVideoStream(f"the source has no video stream ({container.format.name})")
            video = container.streams.video[0]
            info = OpenedInfo(
                format=container.format.name.split(",")[0], codec=video.codec_context.name,
                width=video.codec_context.width, height=video.codec_context.height,
                finite=self._finite(container), address=address)
            # Frame threading holds frames back (one per thread) before any comes out:
            # latency for a live source. Slices only; a file can afford both.
            video.thread_type = "AUTO" if info.finite else "SLICE"
        except BaseException:
            container.close()
            raise
        return container, info

    def _finite(self, container: av.container.InputContainer) -> bool:
        scheme = self._url.scheme
        if scheme == "file":
            return True
        if container.format.name == "hls":  # a VOD playlist has a duration, a live one none
            return container.duration is not None
        if scheme in ("http", "https") and self._opener is not None:
            return self._opener.first_length is not None  # a file, not an endless stream
        return False

    # ----- demux, decode, pace -------------------------------------------------------------
    def _drain(self, container: av.container.InputContainer, info: OpenedInfo, result: ConnectionResult) -> bool:
        """Decode until the end (True), or until ``stop`` (False); failures raise."""
        video = container.streams.video[0]
        pacer = Pacer() if info.finite else None
        try:
            for packet in container.demux(video):
                if self._stop.is_set():
                    return False
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a corrupt packet: the decoder resynchronises on the next ones
                for frame in frames:
                    if pacer is not None and frame.time is not None:
                        if self._stop.wait(pacer.delay(frame.time)):
                            return False
                    result.frames += 1
                    self._on_frame(frame, frame.pts)
        except av.error.ExitError as exc:  # PyAV's read timeout interrupted FFmpeg
            raise TimeoutError(f"no data for {self._timeouts.read:g} s (a hung source)") from exc
        return not self._stop.is_set()


class Pacer:
    """Plays a file at its own rate: a file's frames can be decoded far faster than real
    time, and newest-wins would then keep a few frames of the whole clip. Falling behind
    (a slow decoder, a stalled download) resets the clock instead of catching up later."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._origin: tuple[float, float] | None = None  # (wall, media) seconds

    def delay(self, media_time: float) -> float:
        now = self._clock()
        if self._origin is not None:
            wall, media = self._origin
            due = wall + (media_time - media)
            if media_time >= media and now - due <= MAX_PACING_LAG and due - now <= 5.0:
                return max(0.0, due - now)
        self._origin = (now, media_time)  # first frame, a jump in time, or too far behind
        return 0.0


def failure_kind(exc: BaseException) -> str:
    """A short label for why a connection failed (``rtc_pull_open_failures_total{kind}``)."""
    if isinstance(exc, UrlRefused):
        return "refused"
    if isinstance(exc, ResolveError):
        return "resolve"
    if isinstance(exc, HttpStatusError):
        return "http_status"
    if isinstance(exc, NoVideoStream):
        return "no_video"
    if isinstance(exc, av.error.ProtocolNotFoundError | ProtocolUnavailable):
        return "protocol_unavailable"
    if isinstance(exc, TimeoutError | av.error.ExitError):  # PyAV's timeouts interrupt FFmpeg
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    if isinstance(exc, ssl.SSLError):  # e.g. a certificate that does not verify
        return "tls"
    if isinstance(exc, FileNotFoundError | av.error.HTTPNotFoundError):
        return "not_found"
    if isinstance(exc, av.error.InvalidDataError):
        return "invalid_data"
    return "other"


_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*):[^@/\s'\"]*@", re.I)


def describe(exc: BaseException) -> str:
    """The failure in one line for logs and API answers, URL passwords masked (PyAV puts the
    URL it opened, credentials included, into its error messages)."""
    text = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    if not isinstance(exc, UrlRefused | NoVideoStream | ProtocolUnavailable):
        text = f"{type(exc).__name__}: {text}"
    return _CREDENTIALS.sub(r"\1:***@", text)


class ProtocolUnavailable(Exception):
    """This server's FFmpeg was built without the protocol the URL needs."""


def require_protocol(name: str) -> None:
    protocols = ffmpeg_input_protocols()
    if protocols and name not in protocols:
        raise ProtocolUnavailable(
            f"this server's FFmpeg (inside the PyAV wheel, {av.ffmpeg_version_info}) was built without the "
            f"{name!r} protocol; build PyAV against an FFmpeg with it (for SRT: libsrt) to use {name}:// sources")


@functools.cache
def ffmpeg_input_protocols() -> frozenset[str]:
    """The input protocols of the FFmpeg PyAV loaded (``avio_enum_protocols``), read once.

    PyAV does not expose the list; asking the very library it loaded answers without
    touching the network. Empty if the library cannot be asked (then nothing is refused
    for want of a protocol: FFmpeg will say so itself)."""
    try:
        lib = _libavformat()
        lib.avio_enum_protocols.restype = ctypes.c_char_p
        lib.avio_enum_protocols.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        opaque = ctypes.c_void_p()
        names = set()
        while (name := lib.avio_enum_protocols(ctypes.byref(opaque), 0)) is not None:
            names.add(name.decode())
        return frozenset(names)
    except (OSError, AttributeError) as exc:
        log.warning("cannot list FFmpeg's protocols: %s", exc)
        return frozenset()


def _libavformat() -> Any:
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    for candidate in sorted(libs.glob("libavformat*.so*")) if libs.is_dir() else []:
        return ctypes.CDLL(str(candidate))
    found = ctypes.util.find_library("avformat")
    if found is None:
        raise OSError("libavformat not found")
    return ctypes.CDLL(found)
