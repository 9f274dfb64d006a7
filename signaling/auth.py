"""Optional bearer-token auth for the routes that cost something (``/offer``, ``/predict``).

Tokens come from ``RTC_AUTH_TOKEN`` (a comma list, so tokens can be rotated: add the new
one, move clients, remove the old). Every configured token is compared with
``hmac.compare_digest`` — no early exit — so timing says nothing about which prefix matched.
The probes stay open; ``/metrics`` is checked only with ``RTC_METRICS_AUTH=true``.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import ClientError


def require_token(request: web.Request, tokens: tuple[str, ...]) -> None:
    """Raise 401 unless ``tokens`` is empty or the request carries one of them."""
    if not tokens:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ClientError(401, "unauthorized", "send 'Authorization: Bearer <token>'",
                          {"WWW-Authenticate": 'Bearer realm="rtc-yolo"'})
    candidate = given.strip().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate, token.encode())
    if not matched:
        raise ClientError(401, "unauthorized", "the bearer token is not valid",
                          {"WWW-Authenticate": 'Bearer realm="rtc-yolo", error="invalid_token"'})
