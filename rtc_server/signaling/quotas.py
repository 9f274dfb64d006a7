"""Per-client quotas: how many live sessions and pulls one client may hold at once.

Rate limits bound how *often* a client may ask; a quota bounds how much it may *hold*.
Without one a single client, well under any rate, takes every slot of ``max_sessions``
(a session is opened once and then lives for hours). So each client key — its address,
or its IPv6 /64 (``rtc_server.ratelimit.client_key``) — may hold at most:

- ``sessions`` live WebRTC sessions (``/offer`` and ``/whip`` together),
- ``pulls`` live pull streams (``POST /streams``),

and the next is answered 429 with ``Retry-After`` and an error naming the quota
(``session_quota`` / ``pull_quota``). 0 turns a quota off. Streams the operator configured
(``RTC_SOURCES``) belong to no client and are not counted.

A slot is held from before the costly work starts (ICE gathering, opening the source:
concurrent requests of one client cannot all slip past the check) and, once the stream
exists, for exactly as long as the registry has it: the count is *derived* from the
registry (``is_live``) rather than decremented by a close hook, so it is released
however the stream ends — hang-up, DELETE, timeout, a crashed task, shutdown — and a
stream that never opened releases its slot when the request fails. Memory is bounded:
the entries of streams that ended are dropped whenever a client is counted, and all of
them whenever the table has doubled since the last full sweep.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import ClientError

#: Seconds a client over its quota is asked to wait: a session ends on its own timescale.
QUOTA_RETRY_AFTER = 10


@dataclass(frozen=True)
class QuotaLimits:
    """What one client key may hold at once (0: no quota)."""

    #: Live WebRTC sessions (``/offer`` + ``/whip``): ``RTC_MAX_SESSIONS_PER_CLIENT``.
    sessions: int = 4
    #: Live pull streams (``POST /streams``): ``RTC_MAX_PULLS_PER_CLIENT``.
    pulls: int = 4


#: Quota name -> (the error's name, the setting that sets it, what is counted).
_QUOTAS = {
    "sessions": ("session_quota", "RTC_MAX_SESSIONS_PER_CLIENT", "live sessions (/offer, /whip)"),
    "pulls": ("pull_quota", "RTC_MAX_PULLS_PER_CLIENT", "live pull streams (POST /streams)"),
}


class Slot:
    """One held place under a quota; ``bind`` it to the stream it became."""

    __slots__ = ("stream_id",)

    def __init__(self) -> None:
        self.stream_id: str | None = None

    def bind(self, stream_id: str) -> None:
        self.stream_id = stream_id


class ClientQuotas:
    """The quota table; ``is_live(stream_id)`` says whether the registry still has a stream."""

    def __init__(self, limits: QuotaLimits, is_live: Callable[[str], bool]) -> None:
        self.limits = limits
        self._is_live = is_live
        self._held: dict[tuple[str, str], list[Slot]] = {}
        self._sweep_at = 64

    def held(self, quota: str, key: str) -> int:
        """Slots ``key`` holds under ``quota`` now (pending requests and live streams)."""
        return len(self._prune((quota, key)))

    def _prune(self, entry: tuple[str, str]) -> list[Slot]:
        slots = [s for s in self._held.get(entry, ()) if s.stream_id is None or self._is_live(s.stream_id)]
        if slots:
            self._held[entry] = slots
        else:
            self._held.pop(entry, None)
        return slots

    def _sweep(self) -> None:
        for entry in list(self._held):
            self._prune(entry)
        self._sweep_at = max(64, 2 * len(self._held))

    @contextlib.contextmanager
    def hold(self, quota: str, key: str) -> Iterator[Slot]:
        """A slot for ``key`` under ``quota`` for the request's costly part; raises
        ``ClientError`` 429 when ``key`` already holds its quota. Bind the slot to the
        stream that opened; an unbound slot (the request failed) is released on exit."""
        limit = getattr(self.limits, quota)
        error, setting, what = _QUOTAS[quota]
        if not limit:  # no quota: nothing to count
            yield Slot()
            return
        entry = (quota, key)
        slots = self._prune(entry)
        if len(slots) >= limit:
            raise ClientError(429, error, f"your address already holds {len(slots)} {what}, the most one client "
                              f"may ({setting}={limit}); end one or retry later",
                              {"Retry-After": str(QUOTA_RETRY_AFTER)})
        slot = Slot()
        self._held.setdefault(entry, []).append(slot)
        if len(self._held) >= self._sweep_at:
            self._sweep()
        try:
            yield slot
        finally:
            if slot.stream_id is None:
                held = self._held.get(entry)
                if held is not None and slot in held:
                    held.remove(slot)
                    if not held:
                        del self._held[entry]

    def __len__(self) -> int:
        """Client keys in the table (bounded: see the module's docstring)."""
        return len(self._held)
