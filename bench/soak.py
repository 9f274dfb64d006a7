"""Soak benchmark (issue 7): 300 sessions connect, stream briefly and leave — half one
after another, half in parallel batches, every 4th by vanishing — against a server
process whose threads, fds and RSS are read from /proc before, during and after.

    python -m bench.soak [--sessions 300] [--batch 10] [--abrupt-every 4] [--rounds 2]

Prints a table per round, then one JSON line (the last round's summary, every round's, the
server's exit code). Loopback only: the server is started with RTC_ICE_ADDRESSES=127.0.0.1
and the clients are pinned to 127.0.0.1 too.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import LOOPBACK, bus_rgb, emit, find_model, load, start_server, stop_server, wait_ready
from drivers.soak import run_soak
from rtc_server.webrtc.ice import use_host_addresses


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--abrupt-every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2,
                        help="repeat the soak on the same server: growth in later rounds tells a leak "
                             "from the allocator's high-water mark")
    parser.add_argument("--idle-timeout", type=float, default=3.0,
                        help="server RTC_IDLE_TIMEOUT: how soon a vanished client's session is reaped")
    args = parser.parse_args()

    load_start = load()
    use_host_addresses([LOOPBACK])
    # No session cap (a soak opens more than the default), and a short idle timeout so a
    # vanished client's session is reaped within the round.
    server = start_server(find_model(), env={"RTC_MAX_SESSIONS": "0", "RTC_IDLE_TIMEOUT": str(args.idle_timeout)})
    reports = []
    try:
        await asyncio.to_thread(wait_ready, server)
        frame = bus_rgb(640, 480)
        started = time.monotonic()
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}", flush=True)
            reports.append(await run_soak(
                server.url, server.pid, frame, sessions=args.sessions, batch=args.batch,
                abrupt_every=args.abrupt_every,
                progress=lambda s: print(f"  {s} ({time.monotonic() - started:.0f} s)", flush=True)))
    finally:
        code = await asyncio.to_thread(stop_server, server, 20.0)
        if code != 0:
            print(f"server log (exit {code}):\n{server.log()}", flush=True)
    for n, report in enumerate(reports):
        print(f"\nround {n + 1}")
        print(report.table())
    summary = reports[-1].summary()
    summary["rounds"] = [r.summary() for r in reports]
    summary["rss_growth_by_round_mb"] = [r.summary()["rss_growth_mb"] for r in reports]
    summary["server_exit_code"] = code
    emit("soak", summary, load_start)


if __name__ == "__main__":
    asyncio.run(main())
