"""Experiment helper: ``python -m rtc_server`` with the audio policy of ``$BENCH_AUDIO_POLICY``.

Started by ``bench.experiments.audio_memory``.

``queue`` re-creates what the server did before issue 13 (audio answered ``recvonly`` and
decoded into aiortc's queue, never read) by replacing the drain with a reader that never
reads; ``drain``/``decline`` set that ``AudioPolicy`` for both ``/offer`` and ``/whip``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from rtc_server.__main__ import main
from rtc_server.webrtc import peer


async def _never_read(track: object) -> None:
    await asyncio.Event().wait()


def apply(policy: str) -> None:
    if policy == "queue":
        chosen = peer.AudioPolicy.DRAIN
        peer.PeerSource._drain = staticmethod(_never_read)  # type: ignore[assignment, method-assign]
    else:
        chosen = peer.AudioPolicy(policy)
    for kind in list(peer.AUDIO_POLICY):
        peer.AUDIO_POLICY[kind] = chosen


if __name__ == "__main__":
    apply(os.environ.get("BENCH_AUDIO_POLICY", "drain"))
    sys.exit(main())
