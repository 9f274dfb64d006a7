"""Session tokens: short-lived, signed, scoped to one session — auth a browser can carry.

A browser's ``EventSource`` (and an ``<img src>``, and the WebSocket constructor) cannot send
an ``Authorization`` header, so the routes that *read* a session — ``/events``, ``/ws``,
``/snapshot.jpg`` — also accept ``?token=<session token>``. The token is
``<session id>.<expires>.<signature>``: the session it opens, an expiry (Unix seconds) and
the HMAC-SHA256 of the session id and that expiry under the server's key
(``RTC_TOKEN_SECRET``, random per process by default). The server keeps no token state: it
recomputes the signature. A token opens only its own session and only until it expires (a
subscription opened before then keeps running). It names its session so that a valid token
shown to another session's route is told apart from a forged one (403, not 401).

It is the *publisher's* right to its own session (``rtc_server/signaling/auth.py``): issued
with the session (``/offer``'s answer, WHIP's ``X-Session-Token``), it opens that session's
events, WebSocket, snapshot, ``PATCH``/``DELETE /sessions/{id}`` and a fresh token — and
nothing else. Operators also get one per session in ``GET /sessions``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

#: Longer than any token this server issues (a stream id is at most 128 characters).
MAX_TOKEN_CHARS = 256


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
        return f"{session_id}.{expires}.{self._sign(session_id, expires)}", expires

    def session_of(self, token: str) -> str | None:
        """The session a token opens, when this server issued it and it has not expired; else None."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        session_id, expires_text, signature = [*token.rsplit(".", 2), "", ""][:3]
        if (not session_id or not signature or not (expires_text.isascii() and expires_text.isdigit())
                or len(expires_text) > 12):
            return None
        expires = int(expires_text)
        expected = self._sign(session_id, expires)
        if hmac.compare_digest(signature.encode(), expected.encode()) and expires > self._clock():
            return session_id
        return None

    def valid(self, token: str, session_id: str) -> bool:
        """Whether ``token`` was issued by this server for ``session_id`` and has not expired."""
        return self.session_of(token) == session_id
