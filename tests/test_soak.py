"""Short soak: 20 sessions (some vanish) against a server process; afterwards it holds no
sessions and its thread and fd counts are back to the baseline. The long run (300
sessions, with figures) is ``bench/soak.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from drivers.soak import run_soak
from rtc_server.webrtc.ice import use_host_addresses

from .helpers import ServerProcess, wait_ready


async def test_short_soak_leaves_nothing_behind(spawn: Callable[..., ServerProcess], model_file: Path,
                                                bus_frame: np.ndarray) -> None:
    use_host_addresses(["127.0.0.1"])
    # One client address opening batches while vanished sessions are still being reaped:
    # a load generator, so no per-client quota either.
    server = spawn({"RTC_MODEL": str(model_file), "RTC_RATE_LIMIT": "0", "RTC_IDLE_TIMEOUT": "2",
                    "RTC_MAX_SESSIONS_PER_CLIENT": "0", "RTC_LOG_LEVEL": "WARNING"})
    base = f"http://127.0.0.1:{server.port}"
    await wait_ready(base, server)
    report = await run_soak(base, server.proc.pid, bus_frame, sessions=20, batch=5, abrupt_every=4,
                            settle_timeout=30)
    print(report.table())
    print(report.json_line())
    s = report.summary()
    assert report.failed == 0 and report.sessions == 20 and report.abrupt == 5, s
    assert s["sessions_after"] == 0, s
    assert s["threads_after"] <= s["threads_baseline"], s
    assert s["fds_after"] <= s["fds_baseline"], s
    # RSS: allocator arenas keep some memory; a per-session leak of a decoder and frames
    # (several MB each) would show as far more than this over 20 sessions.
    assert s["rss_growth_mb"] < 100, s
    assert "Traceback" not in server.log, server.log
