"""Which URLs a pull source may fetch: the server-side request forgery (SSRF) policy.

A pull URL comes from whoever may call ``POST /streams``: it is untrusted input that makes
*the server* connect somewhere. Without a policy it reaches what only the server can reach:
the cloud metadata service (``http://169.254.169.254/``), the server's own loopback ports,
the private network behind it, local files. The rules:

- **Schemes**: ``rtsp``, ``rtsps``, ``http``, ``https``, ``srt``; ``file`` only when
  ``RTC_SOURCE_ALLOW_FILE`` is on. Nothing else (no ``data:``, ``concat:``, ``tcp:``...).
- **Destinations** (the rule in ``rtc_server/addresses.py``, which WebRTC ICE candidates
  follow too): every address a host name resolves to must be a public unicast
  address, or lie in a network of ``RTC_SOURCE_ALLOW_NETWORKS``. Loopback, private
  (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), shared, documentation,
  reserved, multicast and unspecified addresses are refused. IPv6 forms that carry an IPv4
  address (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4, Teredo) are judged by that
  IPv4 address too.
- **The syntax**: printable ASCII only (a CR/LF in an RTSP URL would become a header on
  the wire), at most ``MAX_URL_LENGTH`` characters, a host for network schemes.

Checking a name and then letting another client resolve it again would leave a window
(DNS rebinding: the first answer public, the second 127.0.0.1). So the connection is made
to the address that was checked: HTTP(S) through ``http_io`` (our own client, every
redirect and every HLS segment checked the same way), RTSP and SRT by handing FFmpeg a URL
whose host is the checked IP literal (``SourceUrl.pinned``). The checks run again on every
reconnect. What FFmpeg does on its own after connecting is described in docs/sources.md
("Pull sources: the SSRF policy"), with what it leaves open.

This module is pure (stdlib only): configuration validation imports it too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..addresses import AddressPolicy, IPAddress, IPNetwork, parse_networks
from ..addresses import address_kind as _kind
from .redact import redact

#: Schemes a pull URL may have (``file`` needs ``allow_file``).
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "srt")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
MAX_URL_LENGTH = 4096


class ResolveError(OSError):
    """The host name does not resolve (a transient failure for a source that was working)."""


class UrlRefused(ValueError):
    """The policy refuses this URL; ``detail`` says why (it goes back to the client)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class SourceUrl:
    """A syntactically valid pull URL, split into what the connection needs."""

    url: str
    scheme: str
    #: Host name or IP literal (no brackets); "" for ``file``.
    host: str
    port: int
    #: ``user[:password]`` as written (still percent-encoded), or "".
    userinfo: str
    #: Path plus ``?query`` as written; for ``file``, the local path (decoded).
    target: str

    @property
    def redacted(self) -> str:
        """The URL as logs and API answers show it: userinfo and query values masked."""
        return redact(self.url)

    def pinned(self, address: str) -> str:
        """This URL with its host replaced by ``address`` (an IP that was checked), so the
        client that connects (FFmpeg) does no name resolution of its own."""
        host = f"[{address}]" if ":" in address else address
        auth = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{auth}{host}:{self.port}{self.target}"


@dataclass(frozen=True)
class SourcePolicy:
    #: Networks a source may be in although they are not public (e.g. a LAN camera's).
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_file: bool = False

    @classmethod
    def of(cls, networks: Iterable[str], allow_file: bool = False) -> SourcePolicy:
        """From CIDR strings; raises ``ValueError`` naming a bad one."""
        return cls(parse_networks(networks), allow_file)

    @property
    def schemes(self) -> tuple[str, ...]:
        return NETWORK_SCHEMES + (("file",) if self.allow_file else ())

    # ----- the URL's text -------------------------------------------------------------------
    def parse(self, url: object, schemes: Sequence[str] | None = None) -> SourceUrl:
        """Check the URL's syntax and scheme (no network); ``schemes`` narrows the allowed ones
        (e.g. an HTTP source's redirects and HLS segments may only be ``http``/``https``)."""
        if not isinstance(url, str) or not url:
            raise UrlRefused("the URL must be a non-empty string")
        if len(url) > MAX_URL_LENGTH:
            raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
        if any(not 0x21 <= ord(c) <= 0x7E for c in url):
            raise UrlRefused("the URL may contain printable ASCII only (percent-encode the rest; no spaces)")
        allowed = tuple(s for s in (schemes or self.schemes) if s in self.schemes)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"the URL does not parse: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in allowed:
            hint = "" if scheme != "file" or self.allow_file else " (local files need RTC_SOURCE_ALLOW_FILE=true)"
            raise UrlRefused(f"scheme {scheme or '(none)'!r} is not allowed; use one of {', '.join(allowed)}{hint}")
        if parts.fragment:
            raise UrlRefused("the URL must not have a #fragment")
        if scheme == "file":
            if parts.netloc not in ("", "localhost") or parts.query or not parts.path.startswith("/"):
                raise UrlRefused("a file URL is file:///absolute/path (no host, no query)")
            return SourceUrl(url, scheme, "", 0, "", unquote(parts.path))
        host = parts.hostname or ""
        if not host:
            raise UrlRefused("the URL has no host")
        if port is None:
            if scheme not in DEFAULT_PORTS:
                raise UrlRefused(f"a {scheme} URL needs a port")
            port = DEFAULT_PORTS[scheme]
        if port == 0:
            raise UrlRefused("port 0 is not a port to connect to")
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if scheme == "srt":
            _check_srt_query(parts.query)
        source = SourceUrl(url, scheme, host, port, userinfo, target)
        literal = _ip_literal(host)
        if literal is not None:
            self.check_address(literal, host)
        return source

    # ----- where it points ------------------------------------------------------------------
    def allowed(self, address: IPAddress) -> bool:
        """The rule every client-chosen destination follows (``rtc_server/addresses.py``)."""
        return AddressPolicy(self.allow_networks).allowed(address)

    def check_address(self, address: IPAddress, host: str) -> None:
        if not self.allowed(address):
            shown = host if host == str(address) else f"{host} ({address})"
            raise UrlRefused(f"{shown} is a {_kind(address)} address; sources there are refused unless "
                             "RTC_SOURCE_ALLOW_NETWORKS lists its network")

    def resolve(self, source: SourceUrl) -> list[str]:
        """Every address ``source.host`` resolves to, each checked; the connection must go to
        one of these. Raises ``UrlRefused`` if any is refused (a name with one private
        address among public ones is as dangerous as an all-private one), ``OSError`` when
        the name does not resolve (``ResolveError``)."""
        literal = _ip_literal(source.host)
        if literal is not None:
            self.check_address(literal, source.host)
            return [str(literal)]
        try:
            infos = socket.getaddrinfo(source.host, source.port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise ResolveError(f"cannot resolve {source.host!r}: {exc.strerror}") from exc
        addresses: list[str] = []
        for info in infos:
            text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
            if text not in addresses:
                addresses.append(text)
        for text in addresses:
            self.check_address(ipaddress.ip_address(text), source.host)
        if not addresses:
            raise ResolveError(f"{source.host!r} resolves to no address")
        return addresses


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_srt_query(query: str) -> None:
    """SRT's URL options include ``mode=listener`` (open a listening port) and local
    address binding; a pull source is a caller, nothing else."""
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key in ("localip", "localport") or (key == "mode" and value != "caller"):
            raise UrlRefused(f"SRT option {key}={value} is not allowed: a pull source is an SRT caller")
