"""``python -m rtc_server`` / ``rtc-server``: load the model, then serve."""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .app import create_app, load_detector
from .config import ConfigError, load_settings
from .engine.detector import ModelError
from .logs import configure as configure_logging

log = logging.getLogger("rtc_server")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"rtc-server: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        detector = load_detector(settings)  # fail before listening, never half-working
    except ModelError as exc:
        print(f"rtc-server: {exc}", file=sys.stderr)
        return 1
    try:
        tls = tls_context(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        print(f"rtc-server: cannot use the TLS certificate/key: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings, detector)
    except ConfigError as exc:  # e.g. an RTC_SOURCES entry naming a model that is not loaded
        print(f"rtc-server: configuration error: {exc}", file=sys.stderr)
        return 2
    log.info("serving %s://%s:%d", "https" if tls else "http", settings.host, settings.port)
    # SIGTERM/SIGINT -> aiohttp stops accepting, waits up to shutdown_timeout for in-flight
    # requests, then runs the app's cleanup (every session closed): within Cloud Run's 10 s.
    web.run_app(app, host=settings.host, port=settings.port, ssl_context=tls, print=None,
                shutdown_timeout=5.0, handle_signals=True)
    log.info("exited cleanly")
    return 0


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server-side TLS context when a certificate is configured (browsers need a secure
    context for the camera); None serves plain HTTP (e.g. behind a TLS-terminating proxy)."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


if __name__ == "__main__":
    sys.exit(main())
