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
from dataclasses import dataclass, field
from typing import Any


def turn_credential(secret: str, user: str, ttl: float, now: float | None = None) -> tuple[str, str]:
    """``(username, credential)`` for ``user``, valid for ``ttl`` seconds from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class IceServerConfig:
    """The STUN/TURN servers pages and sessions are told of (set by the composition root)."""

    #: ``RTC_ICE_SERVERS``: RTCIceServer dicts handed out as they are.
    static: tuple[dict[str, Any], ...] = ()
    #: ``RTC_TURN_SECRET``: signs a fresh credential per page and session; empty: none made.
    turn_secret: str = field(default="", repr=False)
    #: ``RTC_TURN_URLS``: the TURN server those credentials are for.
    turn_urls: tuple[str, ...] = ()
    #: ``RTC_TURN_TTL``: seconds a generated credential stays valid.
    turn_ttl: int = 3600


def without_static_credentials(server: dict[str, Any]) -> bool:
    """Whether an ``RTC_ICE_SERVERS`` entry carries no password (STUN, or TURN without one)."""
    return server.get("credential") is None and server.get("username") is None


def ice_servers(config: IceServerConfig, user: str, *, static_credentials: bool) -> list[dict[str, Any]]:
    """What a caller allowed to publish is told: ``RTC_ICE_SERVERS`` plus, with
    ``RTC_TURN_SECRET``, the TURN server with a fresh credential for ``user`` (a page or a
    session id: it shows in coturn's log).

    The one rule for every route that hands them out (``/ice-servers``, WHIP's ``Link``):
    ``static_credentials`` — the caller showed a publish or operator token — brings the
    ``RTC_ICE_SERVERS`` entries that carry a password; without it (an anonymous caller of a
    public server) they are left out, since a static password given to anyone is a password
    for the whole world, valid until changed. The generated credential expires on its own.
    """
    servers = [dict(server) for server in config.static if static_credentials or without_static_credentials(server)]
    if config.turn_secret and config.turn_urls:
        username, credential = turn_credential(config.turn_secret, user, config.turn_ttl)
        servers.append({"urls": list(config.turn_urls), "username": username, "credential": credential})
    return servers
