"""Optional bearer-token auth for the routes that cost something (``/offer``, ``/predict``,
the sessions API), and session tokens for the routes a browser opens without headers.

Tokens come from ``RTC_AUTH_TOKEN`` (a comma list, so tokens can be rotated: add the new
one, move clients, remove the old). Every configured token is compared with
``hmac.compare_digest`` — no early exit — so timing says nothing about which prefix matched.
The probes stay open; ``/metrics`` is checked only with ``RTC_METRICS_AUTH=true``.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import ClientError
from .tokens import SessionTokens


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


def require_session_access(request: web.Request, tokens: tuple[str, ...], session_tokens: SessionTokens,
                           session_id: str) -> None:
    """For routes that read one session (events, WebSocket, snapshot): the bearer token, or
    ``?token=<session token>`` issued for this session (``rtc_server/signaling/tokens.py``) — what an
    ``EventSource`` or an ``<img>`` can send. Open when no bearer token is configured."""
    if not tokens:
        return
    given = request.query.get("token")
    if given is not None and session_tokens.valid(given, session_id):
        return
    if given is not None and "Authorization" not in request.headers:
        raise ClientError(401, "unauthorized", "the session token is not valid for this session or has expired; "
                          "get a fresh one from GET /sessions or POST /sessions/{id}/token",
                          {"WWW-Authenticate": 'Bearer realm="rtc-yolo", error="invalid_token"'})
    require_token(request, tokens)
