"""Every HTTP(S) request of a pull source, made by us instead of FFmpeg.

FFmpeg's own HTTP client resolves host names itself, follows redirects to anywhere, and an
HLS playlist makes it open whatever its lines name. Each of those is a way around a check
made on the URL the client gave. So an HTTP(S) source is opened with PyAV's ``io_open``
hook: FFmpeg asks ``HttpOpener`` for every resource it wants — the URL itself, each
variant playlist, each segment, each refresh of a live playlist — and the opener:

- allows ``http``/``https`` only (a segment line ``file:///etc/passwd`` is refused),
- resolves the host and checks every address with the policy, then connects to a checked
  address (no second resolution: no DNS rebinding window),
- follows at most ``MAX_REDIRECTS`` redirects, each checked the same way (never https ->
  http),
- verifies TLS certificates against the system's CAs with the real host name (SNI), which
  FFmpeg does not do by default,
- applies the read timeout to every socket operation and can be aborted from another
  thread (``abort``): a source stops at once, not after a timeout,
- holds the open deadline itself (``deadline``): FFmpeg's interrupt callback, which bounds
  PyAV's own timeouts, is never asked while FFmpeg reads through custom IO, so a server
  that keeps sending (an endless playlist) would otherwise keep the open going forever,
- caps every HLS playlist (a resource whose first bytes are ``#EXTM3U``) in bytes and in
  segment lines (``limits.PlaylistMeter``): FFmpeg keeps a whole playlist in memory.

The first such failure is kept in ``failure`` and raised again by every later read and
open: FFmpeg's HLS demuxer treats a failed read as the end of a playlist and would go on
with what it got, so the caller checks ``failure`` once FFmpeg returns.

What it refused is kept in ``refusals`` so the caller can say why an open failed.

``HttpFile`` is the file object FFmpeg reads through: ``read`` returns what has arrived
(``read1``: a live MPEG-TS stream is not held back to fill a buffer), ``seek`` re-requests
with a ``Range`` header (MP4 files keep their index at the end), and it is seekable only
when the resource has a length.
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
import threading
import time
from urllib.parse import unquote, urljoin

from .connect import connect
from .limits import InputCaps, PlaylistMeter, is_playlist
from .policy import SourcePolicy, SourceUrl, UrlRefused
from .redact import redact

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
#: A forward seek this short is read through instead of costing a new request.
READ_THROUGH_BYTES = 256 * 1024
#: How far a server that ignores ``Range`` may make us read to reach an offset.
MAX_READ_THROUGH_BYTES = 64 * 1024 * 1024
USER_AGENT = "rtc-yolo pull source"
HTTP_SCHEMES = ("http", "https")
_AVIO_FLAG_WRITE = 2


class HttpStatusError(OSError):
    """The server answered with an HTTP error status (404, 403, 500...)."""


class HttpOpener:
    """PyAV's ``io_open`` for one connection of an HTTP(S) pull source."""

    def __init__(self, policy: SourcePolicy, open_timeout: float, read_timeout: float,
                 caps: InputCaps | None = None) -> None:
        self.policy = policy
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.caps = caps or InputCaps()
        #: While the source is opening: the monotonic time by which it must be open.
        self.deadline: float | None = None
        #: The first cap or deadline this connection ran past; raised by every later call.
        self.failure: BaseException | None = None
        #: Bytes of every resource received so far (the reader's watchdog tells "no data" from
        #: "nothing decodable" by it).
        self.bytes_in = 0
        #: Every URL this opener refused, in order (a refused HLS segment, a redirect into a
        #: private network...).
        self.refusals: list[UrlRefused] = []
        #: The first resource's length, if it has one (a finite file rather than a live stream).
        self.first_length: int | None = None
        self._files: set[HttpFile] = set()
        self._lock = threading.Lock()
        self._aborted = False
        self._opened_any = False
        self._tls = ssl.create_default_context()

    def __call__(self, url: str, flags: int, options: dict[str, str]) -> HttpFile:
        if flags & _AVIO_FLAG_WRITE:
            raise PermissionError(f"a pull source does not write ({redact(url)!r})")
        self.check()
        try:
            source = self.policy.parse(url, HTTP_SCHEMES)
        except UrlRefused as exc:
            self._refused(url, exc)
            raise
        if self._aborted:
            raise ConnectionAbortedError("the source is stopping")
        file = HttpFile(self, source)
        with self._lock:
            aborted = self._aborted
            if not aborted:
                if not self._opened_any:  # the URL itself, before any playlist entry or segment
                    self._opened_any = True
                    self.first_length = file.length
                self._files.add(file)
        if aborted:  # aborted while this one was being opened
            file.close()
            raise ConnectionAbortedError("the source is stopping")
        return file

    def _refused(self, url: str, exc: UrlRefused) -> None:
        log.warning("pull source: refused %s: %s", redact(url[:200]), exc.detail)
        self.refusals.append(exc)

    def check(self) -> None:
        """Raise the failure this connection already had, or a ``TimeoutError`` once the open
        deadline has passed."""
        if self.failure is not None:
            raise self.failure
        if self._aborted:
            raise ConnectionAbortedError("the source is stopping")
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.fail(TimeoutError(f"the source did not open within {self.open_timeout:g} s "
                                   "(RTC_SOURCE_OPEN_TIMEOUT)"))

    def fail(self, exc: BaseException) -> None:
        """Keep ``exc`` as this connection's failure (the first one wins) and raise it."""
        if self.failure is None:
            self.failure = exc
        raise self.failure

    def forget(self, file: HttpFile) -> None:
        with self._lock:
            self._files.discard(file)

    def expire(self, exc: BaseException) -> None:
        """From any thread: end this connection with ``exc`` (a deadline passed)."""
        if self.failure is None:
            self.failure = exc
        self.abort()

    def abort(self) -> None:
        """From any thread: make every blocked read return now, and refuse new opens."""
        with self._lock:
            self._aborted = True
            files = list(self._files)
        for file in files:
            file.abort()

    def close_all(self) -> None:
        """Close what FFmpeg left open (PyAV does not close a custom-IO main file)."""
        with self._lock:
            files, self._files = list(self._files), set()
        for file in files:
            file.close()

    # ----- one request, redirects checked -----------------------------------------------------
    def request(self, source: SourceUrl, offset: int) -> tuple[http.client.HTTPResponse, socket.socket, SourceUrl]:
        """GET ``source`` from ``offset`` on; follows redirects through the policy."""
        for _ in range(MAX_REDIRECTS + 1):
            response, sock = self._get(source, offset)
            if response.status not in (301, 302, 303, 307, 308):
                return response, sock, source
            location = response.getheader("Location") or ""
            response.close()
            sock.close()
            next_url = urljoin(source.url, location)
            try:
                following = self.policy.parse(next_url, HTTP_SCHEMES)
                if source.scheme == "https" and following.scheme != "https":
                    raise UrlRefused("a redirect from https to http is refused")
            except UrlRefused as exc:
                self._refused(next_url, exc)
                raise
            log.info("pull source: %d redirect to %s", response.status, following.redacted[:200])
            source = following
        raise OSError(f"more than {MAX_REDIRECTS} redirects")

    def _get(self, source: SourceUrl, offset: int) -> tuple[http.client.HTTPResponse, socket.socket]:
        try:
            addresses = self.policy.resolve(source)
        except UrlRefused as exc:
            self._refused(source.url, exc)
            raise
        sock = self._connect(addresses, source.port)
        try:
            if source.scheme == "https":
                sock.settimeout(self.open_timeout)
                sock = self._tls.wrap_socket(sock, server_hostname=source.host)
            sock.settimeout(self.read_timeout)
            conn = http.client.HTTPConnection(source.host, source.port)
            conn.sock = sock  # the checked address: http.client must not connect on its own
            headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            if source.userinfo:
                user, _, password = source.userinfo.partition(":")
                token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
                headers["Authorization"] = f"Basic {token}"
            conn.request("GET", source.target, headers=headers)
            return conn.getresponse(), sock
        except BaseException:
            sock.close()
            raise

    def _connect(self, addresses: list[str], port: int) -> socket.socket:
        error: OSError | None = None
        for address in addresses:
            try:
                return connect(address, port, self.open_timeout, lambda: self._aborted)
            except ConnectionAbortedError:
                raise
            except OSError as exc:
                error = exc
        assert error is not None
        raise error


class HttpFile:
    """One HTTP resource as a readable (and, when it has a length, seekable) file."""

    def __init__(self, opener: HttpOpener, source: SourceUrl) -> None:
        self._opener = opener
        self._source = source
        self._response: http.client.HTTPResponse | None = None
        self._sock: socket.socket | None = None
        self._pos = 0
        self.length: int | None = None
        #: Bytes of the resource seen so far (a re-read after a seek is not counted again).
        self._seen = 0
        self._head = b""
        self._meter: PlaylistMeter | None = None
        self._sniffed = False
        self._open(0)

    def _open(self, offset: int) -> None:
        response, sock, final = self._opener.request(self._source, offset)
        if response.status not in (200, 206):
            response.close()
            sock.close()
            raise HttpStatusError(f"HTTP {response.status} {response.reason} from {final.redacted[:200]}")
        self._source = final  # later range requests go where the redirects led
        skip = 0
        if offset and response.status == 200:
            skip = offset  # the server ignored Range: read up to the offset
            if skip > MAX_READ_THROUGH_BYTES:
                response.close()
                sock.close()
                raise OSError("the server does not support range requests; cannot seek this far")
        if self.length is None:
            self.length = _total_length(response)
        self._response, self._sock, self._pos = response, sock, offset - skip
        self._discard(skip)

    def read(self, size: int = -1) -> bytes:
        if self._response is None:
            self._open(self._pos)
        assert self._response is not None
        self._opener.check()
        data = self._response.read1(size if size > 0 else 64 * 1024)
        self._opener.check()  # the deadline may have passed (or the opener aborted) meanwhile
        if not data and self.length is not None and self._pos < self.length:
            # http.client reports a connection closed mid-body as a plain end of data; for
            # FFmpeg that would be the end of the file (a clip "over" half-way): it is a drop.
            raise ConnectionResetError(f"the connection closed at byte {self._pos} of {self.length}")
        self._account(data, self._pos)
        self._pos += len(data)
        self._opener.bytes_in += len(data)
        return data

    def _account(self, data: bytes, start: int) -> None:
        """Feed the playlist meter what was not seen before; on the first bytes decide whether
        this resource is a playlist."""
        end = start + len(data)
        if end <= self._seen:
            return
        new = data[max(0, self._seen - start):]
        self._seen = end
        if not self._sniffed:
            self._head += new
            if len(self._head) < 16 and new:
                return
            self._sniffed = True
            if is_playlist(self._head):
                self._meter = PlaylistMeter(self._opener.caps, self._source.redacted[:200])
            new, self._head = self._head, b""
        if self._meter is not None:
            try:
                self._meter.feed(new)
            except Exception as exc:
                self._opener.fail(exc)

    def _discard(self, count: int) -> None:
        while count > 0:
            data = self.read(min(count, 64 * 1024))
            if not data:
                raise OSError("the resource ended before the requested offset")
            count -= len(data)

    def seekable(self) -> bool:
        return self.length is not None

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._pos
        elif whence == 2:
            if self.length is None:
                raise OSError("the resource has no length")
            offset += self.length
        if offset < 0:
            raise OSError("negative seek")
        if offset == self._pos:
            return offset
        if self._response is not None and 0 < offset - self._pos <= READ_THROUGH_BYTES:
            self._discard(offset - self._pos)
            return offset
        self._drop()
        self._open(offset)
        return offset

    def abort(self) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
        if self._sock is not None:
            self._sock.close()
        self._response = self._sock = None

    def close(self) -> None:
        self._drop()
        self._opener.forget(self)


def _total_length(response: http.client.HTTPResponse) -> int | None:
    if response.status == 206:
        total = (response.getheader("Content-Range") or "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.getheader("Content-Length")
    return int(length) if length and length.isdigit() and not response.chunked else None
