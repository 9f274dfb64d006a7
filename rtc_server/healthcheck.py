"""``python -m rtc_server.healthcheck``: the container's HEALTHCHECK, without curl.

It reads the same settings as the server (``RTC_PORT`` > ``PORT`` > 8080, ``RTC_HOST``,
``RTC_CERT``), so the probe follows the port and scheme the server really serves, and asks
``/healthz`` over loopback when the server listens on every interface. With a certificate
it speaks HTTPS without verifying it: the probe talks to its own server over loopback, and
the certificate names the public host (or is self-signed), never 127.0.0.1. Exit 0
healthy, 1 not (Docker's convention).
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from .config import ConfigError, load_settings

#: Addresses that mean "every interface": probe them over loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def probe_url(env: Mapping[str, str] | None = None, path: str = "/healthz") -> str:
    settings = load_settings([], env)
    host = _WILDCARDS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.cert is not None else "http"
    return f"{scheme}://{host}:{settings.port}{path}"


def _own_server_context() -> ssl.SSLContext:
    """TLS to our own server over loopback: encrypted, not verified (see the module doc)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, timeout: float = 4.0) -> int:
    path = (list(argv) if argv is not None else sys.argv[1:]) or ["/healthz"]
    try:
        url = probe_url(env, path[0])
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),  # never via *_proxy
                                         urllib.request.HTTPSHandler(context=_own_server_context()))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
