"""Token buckets: the one rate-limiting primitive, for HTTP clients and data channels.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each request
takes one. An empty bucket says how long until the next token, which becomes the
``Retry-After`` answer. ``KeyedBuckets`` keeps one bucket per client and forgets buckets
that have refilled completely, so a stream of distinct addresses cannot grow it without
bound. ``client_key`` says who "one client" is: an IPv4 address, or an IPv6 address's /64
(one host is routinely given a whole /64, so rotating within it must not escape a limit).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

#: The prefix that keys one IPv6 client: a subscriber or a host usually has a whole /64.
IPV6_CLIENT_PREFIX = 64


def client_key(address: str | None) -> str:
    """The rate-limit and quota key of a client address: an IPv4 address as it is, an IPv6
    address as its /64 (``2001:db8:1:2::/64``; an IPv4-mapped one as the IPv4 address);
    anything else (a Unix socket's empty peer) as itself, or ``unknown``."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take a token: 0.0 if allowed, else the seconds until one is available."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self.burst


class KeyedBuckets:
    """One ``TokenBucket`` per key (e.g. client address); ``rate`` 0 allows everything."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """0.0 if ``key`` may go ahead, else the seconds it must wait."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        return bucket.take()

    def _prune(self) -> None:
        for key in [k for k, b in self._buckets.items() if b.full]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:  # all busy: forget the oldest
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait_s: float) -> str:
    """``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
