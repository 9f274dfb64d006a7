"""An RTSP source's only connection, held by us: FFmpeg talks to a one-shot relay on
127.0.0.1, the relay to the checked address.

FFmpeg's RTSP client follows a ``3xx`` answer to DESCRIBE on its own: it resolves the
``Location`` host itself and connects there, so a camera URL that passed the policy could
send the server anywhere (the metadata service, a private host). FFmpeg has no option to
refuse redirects, and its RTSP connection is not made through PyAV's ``io_open``. So the
reader confines it instead: the URL FFmpeg gets points at this relay, the relay connects to
the address the policy checked (TLS for ``rtsps``, as FFmpeg's ``tls`` did: not verified,
cameras have self-signed certificates), and on the way back it reads the RTSP framing —
interleaved ``$`` packets and RTSP messages — and refuses any redirect (a ``3xx`` answer, a
``REDIRECT`` request) before FFmpeg sees it. What reaches FFmpeg is what the checked server
sent; nothing makes FFmpeg connect anywhere else.

The relay also makes stopping bounded: ``abort`` shuts both sockets down, and FFmpeg's
blocked read returns at once instead of after its socket timeout.

Everything here runs in the source's threads (the reader's for the upstream connect, one
relay thread per direction), never on the event loop; each message head is bounded.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading

from .connect import connect
from .policy import UrlRefused
from .redact import redact

log = logging.getLogger(__name__)

#: Longest RTSP message head (status line and headers) the relay reads before giving up.
MAX_HEAD_BYTES = 64 * 1024
#: Longest RTSP message body (an SDP is a few KiB).
MAX_BODY_BYTES = 1024 * 1024


class RtspRelay:
    """One RTSP connection relayed from 127.0.0.1:``port`` to ``address``:``upstream_port``."""

    def __init__(self, address: str, upstream_port: int, *, tls_host: str | None, open_timeout: float) -> None:
        self._address = address
        self._upstream_port = upstream_port
        self._tls_host = tls_host
        self._open_timeout = open_timeout
        #: Set when the server tried to redirect; the connection is then cut.
        self.refusal: UrlRefused | None = None
        #: Why the relay ended, if it failed (a malformed answer...).
        self.error: BaseException | None = None
        self._aborted = threading.Event()
        self._upstream: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.port = 0
        #: Bytes received from the server so far.
        self.bytes_in = 0

    def start(self) -> int:
        """Connect to the checked address (blocking, bounded by the open timeout), then listen
        on a loopback port for FFmpeg's one connection; returns that port."""
        upstream = connect(self._address, self._upstream_port, self._open_timeout, self._aborted.is_set)
        try:
            if self._tls_host is not None:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # as FFmpeg's tls did
                upstream = context.wrap_socket(upstream, server_hostname=self._tls_host)
            upstream.settimeout(None)  # FFmpeg's own timeouts and ``abort`` bound the waits
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.settimeout(self._open_timeout)
        except BaseException:
            upstream.close()
            raise
        self._upstream, self._listener = upstream, listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._serve, name=f"{threading.current_thread().name}-rtsp-relay",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        return self.port

    def abort(self) -> None:
        """From any thread: cut both sides now (FFmpeg's pending read returns)."""
        self._aborted.set()
        for sock in (self._client, self._upstream):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        listener = self._listener
        if listener is not None:
            try:
                listener.close()
            except OSError:
                pass

    def close(self, timeout: float = 2.0) -> None:
        """Abort and wait (bounded) for the relay threads; every socket is closed."""
        self.abort()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        for sock in (self._client, self._upstream, self._listener):
            if sock is not None:
                sock.close()

    # ----- threads ------------------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None and self._upstream is not None
        try:
            client, _ = self._listener.accept()
        except OSError:  # aborted, or FFmpeg never came
            self.abort()
            return
        finally:
            self._listener.close()
        client.settimeout(None)
        self._client = client
        if self._aborted.is_set():
            self.abort()
            return
        outbound = threading.Thread(target=self._pump_out, name=f"{threading.current_thread().name}-out",
                                    daemon=True)
        self._threads.append(outbound)
        outbound.start()
        try:
            self._pump_in(self._upstream, client)
        except Exception as exc:  # a malformed or refused answer: the connection ends
            if not self._aborted.is_set():
                self.error = exc
        finally:
            self.abort()

    def _pump_out(self) -> None:
        """FFmpeg's requests (and RTCP) to the server, as they are."""
        assert self._client is not None and self._upstream is not None
        try:
            while data := self._client.recv(65536):
                self._upstream.sendall(data)
        except OSError:
            pass
        finally:
            self.abort()

    def _pump_in(self, upstream: socket.socket, client: socket.socket) -> None:
        """The server's bytes to FFmpeg, one framed unit at a time; redirects refused."""
        buffer = bytearray()
        while not self._aborted.is_set():
            chunk = upstream.recv(65536)
            if not chunk:
                return
            self.bytes_in += len(chunk)
            buffer += chunk
            out = bytearray()
            while buffer:
                size = self._unit_size(buffer)
                if size is None:
                    break
                out += buffer[:size]
                del buffer[:size]
            if out:
                client.sendall(out)

    def _unit_size(self, buffer: bytearray) -> int | None:
        """The size of the complete unit at the start of ``buffer`` (None: incomplete); raises
        on a redirect or an oversized message."""
        if buffer[0] == 0x24:  # "$": an interleaved RTP/RTCP packet, 4-byte header
            if len(buffer) < 4:
                return None
            size = 4 + int.from_bytes(buffer[2:4], "big")
            return size if len(buffer) >= size else None
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ValueError(f"an RTSP message head over {MAX_HEAD_BYTES} bytes")
            return None
        head = bytes(buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError(f"an RTSP message body of {length} bytes")
        first = lines[0].split(" ")
        redirect = (first[0].startswith("RTSP/") and len(first) > 1 and first[1][:1] == "3") or first[0] == "REDIRECT"
        if redirect:
            location = headers.get("location", "(no Location)")
            self.refusal = UrlRefused(
                f"the RTSP server answered {' '.join(first[:2]) if first[0] != 'REDIRECT' else 'REDIRECT'} to "
                f"{redact(location)[:200]}; pull sources do not follow RTSP redirects (FFmpeg would connect "
                "there unchecked): ask for the address it redirects to")
            log.warning("pull source: refused an RTSP redirect to %s", redact(location)[:200])
            raise self.refusal
        size = end + 4 + length
        return size if len(buffer) >= size else None
