"""Short-lived TURN credentials: the TURN REST API scheme that coturn's ``use-auth-secret`` checks.

A static TURN password served to every page (``GET /ice-servers``) is a password for the
whole world, valid forever. Instead the server and the TURN server share a secret
(``RTC_TURN_SECRET`` = coturn's ``static-auth-secret``), and every page load and every
server session gets its own credential::

    username   = "<unix expiry time>:<id>"
    credential = base64(HMAC-SHA1(secret, username))

coturn recomputes the HMAC from the username it is given and refuses (401) a username
whose expiry has passed or whose credential does not match — no per-user state on either
side. ``RTC_TURN_TTL`` bounds how long a leaked credential is worth anything; it must
cover the time from fetching it to allocating the relay (the page fetches it when the
user presses Start).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from ..config import Settings


def turn_credential(secret: str, user: str, ttl: float, now: float | None = None) -> tuple[str, str]:
    """``(username, credential)`` for ``user``, valid for ``ttl`` seconds from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(settings: Settings, user: str) -> list[dict[str, Any]]:
    """``RTC_ICE_SERVERS`` plus, with ``RTC_TURN_SECRET``, the TURN server with a fresh
    credential for ``user`` (a page or a session id: it shows in coturn's log)."""
    servers = [dict(server) for server in settings.ice_servers]
    if settings.turn_secret and settings.turn_urls:
        username, credential = turn_credential(settings.turn_secret, user, settings.turn_ttl)
        servers.append({"urls": list(settings.turn_urls), "username": username, "credential": credential})
    return servers
