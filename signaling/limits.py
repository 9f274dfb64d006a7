"""Request-level limits: per-client rate limiting and capped body reads.

Rate limiting is a token bucket per (route, client address): ``/offer`` and ``/predict``
each allow ``rate_burst`` requests at once and ``rate_limit`` per second after that, and
answer 429 + ``Retry-After`` beyond. The address is the TCP peer (``request.remote``);
behind a proxy that is the proxy, so there rely on the proxy's own limits or set
``RTC_RATE_LIMIT=0`` (README, "Security and limits").
"""

from __future__ import annotations

from aiohttp import web

from rtc_server.config import Settings
from rtc_server.ratelimit import KeyedBuckets, retry_after

from .errors import ClientError

#: Largest ``/offer`` body. A real offer is 2-10 KB; 64 KiB leaves room for many candidates.
MAX_OFFER_BYTES = 64 * 1024


class RateLimits:
    """The buckets of every rate-limited route: one set per route name, made on first use
    (so a new route needs no registration here)."""

    def __init__(self, settings: Settings, routes: tuple[str, ...] = ("offer", "predict")) -> None:
        self._rate, self._burst = settings.rate_limit, settings.rate_burst
        self._buckets = {r: KeyedBuckets(self._rate, self._burst) for r in routes}

    def check(self, route: str, request: web.Request) -> None:
        buckets = self._buckets.get(route)
        if buckets is None:
            buckets = self._buckets[route] = KeyedBuckets(self._rate, self._burst)
        wait = buckets.take(request.remote or "unknown")
        if wait > 0:
            raise ClientError(429, "rate_limited", f"too many /{route} requests from your address; "
                              f"retry in {wait:.1f} s", {"Retry-After": retry_after(wait)})


RATE_LIMITS: web.AppKey[RateLimits] = web.AppKey("rate_limits", RateLimits)


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
