"""A real webhook receiver for the tests: an aiohttp app that verifies each body's
``X-RTC-Signature`` HMAC as a receiver in production would (issue 21)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

SECRET = "s3cret-for-the-receiver"


class Receiver:
    """A webhook receiver: verifies each body's signature as a real one would; ``fail_first``
    answers 503 to that many requests first."""

    def __init__(self, secret: str | None = SECRET, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.requests = 0
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(request.headers.get("X-RTC-Signature", ""), expected):
                self.bad_signatures += 1
                return web.Response(status=401)
        if self.fail_first:
            self.fail_first -= 1
            return web.Response(status=503)
        assert request.content_type == "application/json"
        self.events.append(json.loads(body))
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app
