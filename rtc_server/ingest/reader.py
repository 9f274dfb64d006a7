"""One connection of a pull source, run in the source's own thread: open the URL with PyAV,
demux its first video stream, decode, pace, and hand each frame over.

Everything here blocks, which is why it never runs on the event loop: opening waits on the
network, and decoding is CPU work (PyAV releases the GIL while FFmpeg decodes, so the loop
and the inference thread carry on). ``run`` returns when the connection ends — the source
reached its end, failed, or ``stop`` was set — with a ``ConnectionResult`` saying which;
reconnecting is the caller's business (``source``).

How a URL is opened, per scheme (``open_input``):

- ``rtsp``/``rtsps``: FFmpeg connects to a one-shot relay on loopback (``rtsp_relay``),
  which connects to the checked address and refuses any RTSP redirect (FFmpeg would follow
  it to anywhere); RTP interleaved over the RTSP TCP connection (``rtsp_transport=tcp``:
  no UDP ports to open, nothing lost to NAT or packet loss) and only the video track set
  up; low-latency flags (``fflags=nobuffer``, ``flags=low_delay``), a small probe
  (``probesize``, ``analyzeduration``); FFmpeg may open ``tcp`` (to the relay; the relay
  speaks TLS for rtsps) and nothing else.
- ``http``/``https``: every request made by ``http_io.HttpOpener`` (PyAV ``io_open``);
  ``http_persistent=0`` because FFmpeg's HLS connection reuse assumes its own HTTP client.
- ``srt``: pinned like RTSP; only ``srt`` (and ``udp`` under it) may be opened.
- ``file``: only ``file`` may be opened (an HLS playlist on disk cannot reach the network).

RTSP's socket timeout is FFmpeg's ``timeout`` option in microseconds: FFmpeg 5 renamed it
from ``stimeout`` (which FFmpeg 8, in PyAV 18's wheel, no longer has); ``rw_timeout`` is
the generic protocol option, not needed since the interrupt callback bounds every read.
Every scheme gets PyAV's open/read timeouts (FFmpeg's interrupt callback) and a demuxer
allow-list (``format_whitelist``: no ``concat`` script, no
``sdp`` that opens arbitrary UDP ports, no image sequence reading local files).

The interrupt callback is not enough on its own: FFmpeg never asks it while it reads
through custom IO (every HTTP(S) and HLS source), so a server that keeps sending would
hold an open forever. So each connection has a watchdog thread that owns the deadlines
for every protocol: the open deadline (``source_open_timeout``), and once open, no decoded
frame for ``source_read_timeout`` — a hung source, or one that sends only what does not
decode (each corrupt packet is counted). Past a deadline it cuts the connection's sockets
(``abort``): FFmpeg's blocked read returns at once. The same cut makes ``stop`` bounded.

What the source sends is capped (``limits``): every decoded frame's size is checked before
it is handed over (so before any RGB conversion or snapshot), and HLS playlists are
capped in bytes and segments by ``http_io``. A source over a cap ends with an error that
names the cap (``InputRefused``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from ..engine.frames import check_frame_size
from .http_io import HttpOpener, HttpStatusError
from .limits import FrameTooLarge, InputCaps, InputRefused
from .policy import ResolveError, SourcePolicy, SourceUrl, UrlRefused
from .redact import redact_text
from .rtsp_relay import RtspRelay

log = logging.getLogger(__name__)

#: Demuxers a pull source may turn out to be (FFmpeg ``format_whitelist``).
FORMATS = "rtsp,hls,mpegts,mov,matroska,flv,avi,h264,hevc,mjpeg,mpjpeg,aac,mp3"
#: Low-latency demuxing for live sources: do not buffer, probe little.
LIVE_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "262144", "analyzeduration": "500000"}
#: A file played at its own rate falls behind by more than this: jump to now, never catch up.
MAX_PACING_LAG = 0.5
#: How often the watchdog looks at a connection's deadlines, in seconds.
WATCH_INTERVAL = 0.1


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
                 on_open: Callable[[OpenedInfo], None], on_frame: FrameSink, *, caps: InputCaps | None = None,
                 on_corrupt: Callable[[], None] | None = None) -> None:
        self._url = url
        self._policy = policy
        self._timeouts = timeouts
        self._stop = stop
        self._on_open = on_open
        self._on_frame = on_frame
        self._on_corrupt = on_corrupt
        self._caps = caps or InputCaps()
        self._opener: HttpOpener | None = None
        self._relay: RtspRelay | None = None
        #: Packets the demuxer flagged or the decoder refused as corrupt, this connection.
        self.corrupt_packets = 0
        self._opening = True
        self._open_deadline = 0.0
        #: Monotonic times of the last decoded frame (or the open) and of the last packet.
        self._last_progress = 0.0
        self._last_packet = 0.0
        #: Why the watchdog cut the connection, if it did.
        self._expired: str | None = None
        self._done = threading.Event()

    def abort(self) -> None:
        """From any thread: unblock a pending read now (HTTP sockets, the RTSP relay)."""
        if self._opener is not None:
            self._opener.abort()
        if self._relay is not None:
            self._relay.abort()

    def run(self) -> ConnectionResult:
        result = ConnectionResult()
        container: av.container.InputContainer | None = None
        self._open_deadline = time.monotonic() + self._timeouts.open
        watchdog = threading.Thread(target=self._watch, name=f"{threading.current_thread().name}-watch", daemon=True)
        watchdog.start()
        try:
            container, info = self._open()
            result.opened, result.finite = True, info.finite
            self._on_open(info)
            result.ended = self._drain(container, info, result)
        except Exception as exc:  # every failure is an outcome: the caller decides what next
            result.error = self._explain(exc)
            if isinstance(result.error, UrlRefused):
                result.refused = result.error
        finally:
            self._done.set()
            if container is not None:
                container.close()
            if self._opener is not None:
                self._opener.close_all()
                if self._opener.refusals and result.refused is None:
                    result.refused = self._opener.refusals[0]
            if self._relay is not None:
                self._relay.close()
            watchdog.join(1.0)
        return result

    def _explain(self, exc: Exception) -> Exception:
        """What really ended the connection: FFmpeg reports a cut socket as an I/O error or
        invalid data; the refusal, cap or deadline behind the cut says more."""
        if self._relay is not None and self._relay.refusal is not None:
            return self._relay.refusal
        failure = self._opener.failure if self._opener is not None else None
        if isinstance(failure, Exception) and failure is not exc and not isinstance(exc, InputRefused | UrlRefused):
            return failure
        if self._expired is not None and not isinstance(exc, InputRefused | UrlRefused | TimeoutError):
            return TimeoutError(self._expired)
        return exc

    # ----- deadlines (the watchdog thread) -----------------------------------------------------
    def _watch(self) -> None:
        timeouts = self._timeouts
        progress, received = self._last_progress, self._bytes_in()
        while not self._done.wait(WATCH_INTERVAL):
            if self._expired is not None:
                continue
            now = time.monotonic()
            if self._last_progress != progress:  # what had arrived by the last good frame
                progress, received = self._last_progress, self._bytes_in()
            if self._stop.is_set():
                self.abort()  # also reaches what was being set up when ``stop`` came
            elif self._opening:
                if now > self._open_deadline:
                    self._expire(f"the source did not open within {timeouts.open:g} s")
            elif now - self._last_progress > timeouts.read:
                if self._last_packet <= self._last_progress and self._bytes_in() <= received:
                    self._expire(f"no data for {timeouts.read:g} s (a hung source)")
                else:  # bytes or packets came, no clean frame did: garbage
                    self._expire(f"nothing decodable for {timeouts.read:g} s "
                                 f"({self.corrupt_packets} corrupt packets)")

    def _bytes_in(self) -> int:
        """Bytes received so far where this process sees them (HTTP, the RTSP relay)."""
        opener, relay = self._opener, self._relay
        return (opener.bytes_in if opener is not None else 0) + (relay.bytes_in if relay is not None else 0)

    def _expire(self, why: str) -> None:
        self._expired = why
        if self._opener is not None:
            self._opener.expire(TimeoutError(why))
        self.abort()

    # ----- open ------------------------------------------------------------------------------
    def _open(self) -> tuple[av.container.InputContainer, OpenedInfo]:
        url, timeouts = self._url, self._timeouts
        options: dict[str, str] = {"format_whitelist": FORMATS}
        io_open = None
        address = None
        if url.scheme in ("rtsp", "rtsps"):
            address = self._policy.resolve(url)[0]
            self._relay = RtspRelay(address, url.port, tls_host=url.host if url.scheme == "rtsps" else None,
                                    open_timeout=timeouts.open)
            port = self._relay.start()
            if self._stop.is_set():  # stopped while connecting: the abort could not reach the relay
                self._relay.abort()
            auth = f"{url.userinfo}@" if url.userinfo else ""
            target = f"rtsp://{auth}127.0.0.1:{port}{url.target}"
            options |= LIVE_OPTIONS | {
                "rtsp_transport": "tcp", "allowed_media_types": "video",
                "timeout": str(int(timeouts.read * 1e6)),  # socket I/O, microseconds
                "protocol_whitelist": "tcp",
            }
        elif url.scheme == "srt":
            require_protocol("srt")
            address = self._policy.resolve(url)[0]
            target = url.pinned(address)
            options |= LIVE_OPTIONS | {"protocol_whitelist": "srt,udp"}
        elif url.scheme in ("http", "https"):
            self._opener = io_open = HttpOpener(self._policy, timeouts.open, timeouts.read, self._caps)
            self._opener.deadline = time.monotonic() + timeouts.open
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
            if self._opener is not None:
                self._opener.deadline = None
                if self._opener.failure is not None:  # a cap FFmpeg went past (a truncated playlist)
                    raise self._opener.failure
            if self._expired is not None:
                raise TimeoutError(self._expired)
            if not container.streams.video:
                raise NoVideoStream(f"the source has no video stream ({container.format.name})")
            video = container.streams.video[0]
            info = OpenedInfo(
                format=container.format.name.split(",")[0], codec=video.codec_context.name,
                width=video.codec_context.width, height=video.codec_context.height,
                finite=self._finite(container), address=address)
            if info.width > 0 and info.height > 0:  # the header's size; each decoded frame is checked too
                too_large = check_frame_size(info.width, info.height, self._caps.max_frame_pixels)
                if too_large is not None:
                    raise FrameTooLarge(too_large)
            # Frame threading holds frames back (one per thread) before any comes out:
            # latency for a live source. Slices only; a file can afford both.
            video.thread_type = "AUTO" if info.finite else "SLICE"
            # The decoder itself refuses to allocate a picture over the cap (FFmpeg's
            # ``max_pixels``): an oversized frame costs no memory, not even once.
            video.codec_context.options = {"max_pixels": str(self._caps.max_frame_pixels)}
        except BaseException:
            container.close()
            raise
        self._last_progress = self._last_packet = time.monotonic()
        self._opening = False
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
        max_pixels = self._caps.max_frame_pixels
        opener = self._opener
        try:
            for packet in container.demux(video):
                if self._stop.is_set():
                    return False
                if opener is not None and opener.failure is not None:
                    raise opener.failure
                self._last_packet = time.monotonic()
                corrupt = packet.is_corrupt  # the demuxer saw it damaged (a continuity error...)
                if corrupt:
                    self._count_corrupt()
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.ArgumentError):
                    # Over the cap (the decoder's ``max_pixels`` refused the picture), or a
                    # packet it could not use: it resynchronises on the next ones. Counted;
                    # a source that sends nothing else is cut by the watchdog.
                    context = video.codec_context
                    too_large = check_frame_size(context.width, context.height, max_pixels)
                    if too_large is not None and context.width > 0 and context.height > 0:
                        raise FrameTooLarge(too_large) from None
                    if not corrupt:
                        self._count_corrupt()
                    continue
                for frame in frames:
                    # Before anything converts or keeps the frame: its size is the source's to choose.
                    too_large = check_frame_size(frame.width, frame.height, max_pixels)
                    if too_large is not None:
                        raise FrameTooLarge(too_large)
                    # Only a clean frame is progress: concealed garbage keeps no source "playing".
                    clean = not corrupt and not frame.is_corrupt
                    if pacer is not None and frame.time is not None:
                        delay = pacer.delay(frame.time)
                        if clean:
                            self._last_progress = time.monotonic() + delay
                        if self._stop.wait(delay):
                            return False
                    elif clean:
                        self._last_progress = time.monotonic()
                    result.frames += 1
                    self._on_frame(frame, frame.pts)
        except av.error.ExitError as exc:  # PyAV's read timeout interrupted FFmpeg
            raise TimeoutError(f"no data for {self._timeouts.read:g} s (a hung source)") from exc
        if self._expired is not None and not self._stop.is_set():  # cut by the watchdog, not the end
            raise TimeoutError(self._expired)
        if opener is not None and opener.failure is not None:
            raise opener.failure
        return not self._stop.is_set()

    def _count_corrupt(self) -> None:
        self.corrupt_packets += 1
        if self._on_corrupt is not None:
            self._on_corrupt()


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
    if isinstance(exc, InputRefused):
        return exc.kind
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


def describe(exc: BaseException) -> str:
    """The failure in one line for logs and API answers, every URL in it redacted (PyAV puts
    the URL it opened, credentials and query included, into its error messages)."""
    text = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    if not isinstance(exc, UrlRefused | NoVideoStream | ProtocolUnavailable | InputRefused):
        text = f"{type(exc).__name__}: {text}"
    return redact_text(text)


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
