"""``python -m rtc_server`` / ``rtc-server``: load the model, then serve."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from .app import create_app, load_detector
from .config import ConfigError, load_settings
from .detector import ModelError


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"rtc-server: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aioice").setLevel(logging.WARNING)
    try:
        detector = load_detector(settings)  # fail before listening, never half-working
    except ModelError as exc:
        print(f"rtc-server: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings, detector)
    web.run_app(app, host=settings.host, port=settings.port, print=None, shutdown_timeout=8.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
