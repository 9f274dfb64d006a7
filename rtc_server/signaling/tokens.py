"""Session tokens: short-lived, signed, scoped to one session — auth a browser can carry.

A browser's ``EventSource`` (and an ``<img src>``, and the WebSocket constructor) cannot send
an ``Authorization`` header, so the routes that *read* a session — ``/events``, ``/ws``,
``/snapshot.jpg`` — also accept ``?token=<session token>``. The token is
``<expires>.<signature>``: an expiry (Unix seconds) and the HMAC-SHA256 of the session id
and that expiry under the server's key (``RTC_TOKEN_SECRET``, random per process by default).
The server keeps no token state: it recomputes the signature. A token opens only its own
session and only until it expires (a subscription opened before then keeps running); it is
issued with the session (``/offer``'s answer), in ``GET /sessions`` and by
``POST /sessions/{id}/token`` — all behind the bearer token when ``RTC_AUTH_TOKEN`` is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SessionTokens:
    def __init__(self, secret: str | bytes = b"", ttl: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        self._key = key or secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock

    def _sign(self, session_id: str, expires: int) -> str:
        message = f"rtc-yolo session {session_id} {expires}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, session_id: str) -> tuple[str, int]:
        """A token for ``session_id`` and its expiry (Unix seconds)."""
        expires = int(self._clock() + self.ttl)
        return f"{expires}.{self._sign(session_id, expires)}", expires

    def valid(self, token: str, session_id: str) -> bool:
        """Whether ``token`` was issued by this server for ``session_id`` and has not expired."""
        expires_text, _, signature = token.partition(".")
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12 or not signature:
            return False
        expires = int(expires_text)
        expected = self._sign(session_id, expires)
        return hmac.compare_digest(signature.encode(), expected.encode()) and expires > self._clock()
