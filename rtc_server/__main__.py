"""``python -m rtc_server`` / ``rtc-server``: load the models, then serve until SIGTERM.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when a model cannot be fetched,
verified, loaded or warmed up, the port cannot be listened on, or the store cannot be used
(``RTC_DATABASE_URL`` is not a database URL, the database is unreachable, ``RTC_DATA_DIR``
cannot be written), 2 for a bad setting or TLS file. Each prints what is wrong.

Shutdown (SIGTERM or SIGINT), in order:

1. **drain** (``RTC_DRAIN_SECONDS``, default 0): new sessions get 503 ``draining`` and
   ``/readyz`` says 503 ``draining``, so a load balancer sends offers elsewhere; HTTP
   (``/predict``, probes) is still served; live sessions may end on their own for up to
   that long. A second signal ends the drain at once; a model that fails its warm-up skips it.
2. **stop**: stop listening, give requests in flight up to ``SHUTDOWN_TIMEOUT`` s, then the
   app's cleanup closes every session left through its normal close path and stops the
   scheduler's inference workers.

With the default drain of 0 the whole shutdown fits Cloud Run's and ``docker stop``'s 10 s;
GKE's ``terminationGracePeriodSeconds`` is sized to the drain it configures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, Settings, load_settings
from .logs import configure as configure_logging

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("rtc_server")

#: Seconds requests in flight get once the server stops listening (after the drain).
SHUTDOWN_TIMEOUT = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"rtc-server: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # The server itself is imported once the settings parse: a bad setting (exit 2) or
    # --help answers in a tenth of a second, not after some 2.5 CPU seconds of importing
    # aiohttp, aiortc, the store and the analytics.
    from .app import create_app, load_models
    from .engine.detector import ModelError
    from .engine.model_sources import ModelSourceError
    from .store import StoreConfigError, StoreUnavailable
    from .wiring import store_config

    try:
        store_config(settings).sqlalchemy_url()  # a URL that can never work: before the models load
    except StoreConfigError as exc:
        print(f"rtc-server: {exc}", file=sys.stderr)
        return 1
    try:
        models = load_models(settings)  # fail before listening, never half-working
    except (ModelError, ModelSourceError) as exc:
        print(f"rtc-server: {exc}", file=sys.stderr)
        return 1
    try:
        tls = tls_context(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        print(f"rtc-server: cannot use the TLS certificate/key: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    failures: list[str] = []

    def stop_on_failure(reason: str) -> None:
        """A model failed its warm-up: shut down at once (no drain), then exit 1."""
        failures.append(reason)
        stop.set()

    try:
        app = create_app(settings, models, on_fatal=stop_on_failure)
    except ConfigError as exc:  # e.g. an RTC_SOURCES entry naming a model that is not loaded
        print(f"rtc-server: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(app, settings, tls, stop, drain=lambda: not failures))
    except (StoreConfigError, StoreUnavailable) as exc:  # opened at start-up, before listening
        print(f"rtc-server: cannot open the store: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the port is taken, the address is not ours, ...
        print(f"rtc-server: cannot listen: {exc}", file=sys.stderr)
        return 1
    if failures:
        print(f"rtc-server: {failures[0]}", file=sys.stderr)
        return 1
    log.info("exited cleanly")
    return 0


async def serve(app: web.Application, settings: Settings, tls: ssl.SSLContext | None, signalled: asyncio.Event,
                drain: Callable[[], bool] = lambda: True) -> None:
    """Serve ``app`` (and ``/metrics`` on ``RTC_METRICS_PORT``) until a signal sets
    ``signalled`` (so does a fatal failure), then drain (when ``drain()`` says so) and stop."""
    from aiohttp import web

    from rtc_server.signaling.proxies import AccessLogger
    from rtc_server.signaling.routes import METRICS_APP

    runners = [web.AppRunner(app, handle_signals=False, access_log_class=AccessLogger,
                             shutdown_timeout=SHUTDOWN_TIMEOUT)]
    if METRICS_APP in app:
        runners.append(web.AppRunner(app[METRICS_APP], handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    try:
        for runner in runners:
            await runner.setup()
        await web.TCPSite(runners[0], settings.host, settings.port, ssl_context=tls).start()
        log.info("serving %s://%s:%d", "https" if tls else "http", settings.host, settings.port)
        if len(runners) > 1:
            await web.TCPSite(runners[1], settings.host, settings.metrics_port).start()
            log.info("serving /metrics on http://%s:%d", settings.host, settings.metrics_port)
        await signalled.wait()
        signalled.clear()
        if drain():
            await _drain(app, settings, signalled)
    finally:
        for runner in runners:
            await runner.cleanup()


async def _drain(app: web.Application, settings: Settings, signalled: asyncio.Event) -> None:
    """Refuse new sessions and let live ones end, for up to ``drain_seconds`` or until a
    second signal."""
    from rtc_server.signaling.context import REGISTRY

    log.info("shutting down: draining for up to %.0f s", settings.drain_seconds)
    drain = asyncio.ensure_future(app[REGISTRY].drain(settings.drain_seconds))
    second = asyncio.ensure_future(signalled.wait())
    await asyncio.wait([drain, second], return_when=asyncio.FIRST_COMPLETED)
    if not drain.done():
        log.info("second signal: ending the drain now")
    for task in (drain, second):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
