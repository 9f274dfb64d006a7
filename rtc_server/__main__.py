"""``python -m rtc_server`` / ``rtc-server``: load the models, then serve.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when a model cannot be fetched,
verified, loaded or warmed up, 2 for a bad setting or TLS file. Each prints what is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .app import create_app, load_models
from .config import ConfigError, load_settings
from .engine.detector import ModelError
from .engine.sources import SourceError
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
        models = load_models(settings)  # fail before listening, never half-working
    except (ModelError, SourceError) as exc:
        print(f"rtc-server: {exc}", file=sys.stderr)
        return 1
    try:
        tls = tls_context(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        print(f"rtc-server: cannot use the TLS certificate/key: {exc}", file=sys.stderr)
        return 2
    failures: list[str] = []

    def stop_on_failure(reason: str) -> None:
        """A model failed its warm-up: shut down exactly as on SIGTERM, then exit 1."""
        failures.append(reason)
        asyncio.get_running_loop().call_soon(_graceful_exit)

    app = create_app(settings, models, on_fatal=stop_on_failure)
    log.info("serving %s://%s:%d", "https" if tls else "http", settings.host, settings.port)
    # SIGTERM/SIGINT -> aiohttp stops accepting, waits up to shutdown_timeout for in-flight
    # requests, then runs the app's cleanup (every session closed): within Cloud Run's 10 s.
    web.run_app(app, host=settings.host, port=settings.port, ssl_context=tls, print=None,
                shutdown_timeout=5.0, handle_signals=True)
    if failures:
        print(f"rtc-server: {failures[0]}", file=sys.stderr)
        return 1
    log.info("exited cleanly")
    return 0


def _graceful_exit() -> None:
    """What aiohttp's own SIGTERM handler does: ``run_app`` then closes everything in order."""
    raise web.GracefulExit()


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
