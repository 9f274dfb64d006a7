"""Request-level limits: per-client rate limiting and capped body reads.

Rate limiting is a token bucket per (route, client key), answering 429 +
``Retry-After`` beyond it. Session routes (``/offer``) allow ``rate_burst`` requests at
once and ``rate_limit`` per second after that: a session is set up once. ``/predict`` has
its own, higher ``predict_rate_*`` limits, because its clients are cameras POSTing a frame
10-30 times a second (overload is refused by the inference side, not here). The address
is ``request.remote``: the TCP peer, or behind ``RTC_TRUSTED_PROXIES`` the client those
proxies name (rtc_server/signaling/proxies.py); the key is that address, or for IPv6 its
/64 (``rtc_server.ratelimit.client_key``), so rotating addresses within a /64 does not escape.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from rtc_server.ratelimit import KeyedBuckets, client_key, retry_after

from .errors import ClientError

#: Largest ``/offer`` body. A real offer is 2-10 KB; 64 KiB leaves room for many candidates.
MAX_OFFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class RateLimit:
    """Requests per second per client address (0: off), after a burst of ``burst``."""

    rate: float
    burst: int


class RateLimits:
    """The buckets of every rate-limited route: one set per route name, made on first use
    (so a new route needs no registration here). ``sessions``: every route but ``/predict``
    (``RTC_RATE_LIMIT``/``RTC_RATE_BURST``); ``predict``: ``RTC_PREDICT_RATE_*``."""

    def __init__(self, sessions: RateLimit, predict: RateLimit) -> None:
        self._sessions = sessions
        self._buckets = {"predict": KeyedBuckets(predict.rate, predict.burst)}

    def check(self, route: str, request: web.Request) -> None:
        """Charge ``route`` for this client: any route but ``predict`` gets the session limits."""
        bucket = self._buckets.get(route)
        if bucket is None:
            bucket = self._buckets[route] = KeyedBuckets(self._sessions.rate, self._sessions.burst)
        wait = bucket.take(client_key(request.remote))
        if wait > 0:
            raise ClientError(429, "rate_limited", f"too many /{route} requests from your address; "
                              f"retry in {wait:.1f} s", {"Retry-After": retry_after(wait)})


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit`` (never buffers more)."""
    too_large = ClientError(413, "request_entity_too_large", f"the body exceeds {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
