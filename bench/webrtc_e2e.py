"""End to end over WebRTC: N aiortc peers on loopback, each sending 640x480 at 30 fps.

For each N a fresh server (``python -m rtc_server``, ICE pinned to 127.0.0.1) runs as a
subprocess, sampled for CPU and RSS with psutil; the peers run in this process. Reported
per N: frame-matched latency p50/p95/p99, its slope per minute (a least-squares fit: a
backlog shows as a positive slope), detections/s in total and per peer, frames dropped by
the server's newest-frame mailbox, and server/client CPU.

    python -m bench.webrtc_e2e [--duration 60] [--multi-duration 60] [--peers 1,2,4,8]

``--multi-duration`` sets the duration of the N > 1 runs (default: ``--duration``);
``--client-procs K`` spreads the peers over K client processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from bench.common import ROOT, ProcessSampler, emit, find_model, load, running_server, save_json, table
from bench.peers import PeerResult, aggregate, child_commands, child_results, run_peers

#: Targets from issue 4.
P50_OVER_FLOOR_MS = 45.0
THROUGHPUT_SHARE = 0.90
FAIRNESS = 0.20


def peers_in_processes(url: str, peers: int, duration: float, procs: int) -> tuple[list[PeerResult], dict]:
    """Split the peers over ``procs`` ``bench.peers`` subprocesses; their summed CPU."""
    children = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)
                for argv in child_commands(url, peers, duration, procs)]
    samplers = [ProcessSampler(c.pid).start() for c in children]
    outputs = [c.communicate()[0] for c in children]
    usages = [s.stop() for s in samplers]
    results = [r for out in outputs for r in child_results(out)]
    usage = {"cpu_pct_mean": sum(u["cpu_pct_mean"] for u in usages), "processes": len(children),
             "rss_mb_max": sum(u["rss_mb_max"] for u in usages)}
    return results, usage


def run_one(model: Path, peers: int, duration: float, extra_args: list[str], procs: int = 1) -> dict[str, Any]:
    load_start = load()
    with running_server(model, extra_args=extra_args) as server:
        server_sampler = ProcessSampler(server.pid).start()
        if procs > 1:
            results, client_usage = peers_in_processes(server.url, peers, duration, min(procs, peers))
        else:
            client_sampler = ProcessSampler(os.getpid()).start()
            results = asyncio.run(run_peers(server.url, peers, duration))
            client_usage = client_sampler.stop()
        server_usage = server_sampler.stop()
    out = aggregate(results)
    out.update(duration_s=duration, server=server_usage, client=client_usage,
               per_peer=[r.to_dict() for r in results], load_start=load_start, load_end=load())
    series = [{"t": r.times_s, "latency_ms": r.latency_ms} for r in results]
    return {**out, "_series": series}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of streaming for N = 1")
    parser.add_argument("--multi-duration", type=float, default=None, help="seconds for N > 1 (default --duration)")
    parser.add_argument("--peers", default="1,2,4,8", help="comma-separated peer counts")
    parser.add_argument("--client-procs", type=int, default=4,
                        help="spread the peers over up to this many client processes")
    parser.add_argument("--server-args", default="", help="extra flags for python -m rtc_server")
    parser.add_argument("--out", type=Path, default=None, help="also write full results (with series) here")
    args = parser.parse_args()
    load_start = load()
    model = find_model()
    runs: list[dict[str, Any]] = []
    for n in (int(x) for x in args.peers.split(",")):
        duration = args.duration if n == 1 or args.multi_duration is None else args.multi_duration
        print(f"  {n} peer(s) for {duration:.0f} s ...", flush=True)
        runs.append(run_one(model, n, duration, args.server_args.split(), args.client_procs))
    rows = []
    for r in runs:
        lat = r["latency_ms"]
        rates = r["per_peer_detections_per_s"]
        sent_fps = r["frames_sent"] / r["peers"] / r["duration_s"]
        rows.append([r["peers"], r["duration_s"], sent_fps, lat["p50"], lat["p95"], lat["p99"], r["slope_ms_per_min"],
                     r["queue_ms"]["p50"], r["inference_ms"]["p50"], r["handoff_ms"]["p50"],
                     r["outside_server_ms"]["p50"],
                     r["total_detections_per_s"], r["inference_busy"], min(rates), max(rates),
                     r["frames_dropped_by_server"], r["frames_lost_in_transit"], r["server"]["cpu_pct_mean"],
                     r["server"]["rss_mb_max"], r["client"]["cpu_pct_mean"], "/".join(map(str, r["load_start"]))])
    print(table(["peers", "s", "sent fps/peer", "p50 ms", "p95 ms", "p99 ms", "slope ms/min", "queue p50 ms",
                 "inference p50 ms",
                 "hand-off p50 ms", "outside server p50 ms", "det/s total", "inference busy",
                 "det/s min peer", "det/s max peer", "dropped", "lost", "server CPU %", "server RSS MB",
                 "client CPU %", "load 1/5/15"], rows))
    single = next((r for r in runs if r["peers"] == 1), None)
    verdict: dict[str, Any] = {}
    if single is not None:
        over_floor = single["latency_ms"]["p50"] - single["inference_ms"]["p50"]
        best = max(r["total_detections_per_s"] for r in runs if r["peers"] == 1)
        verdict = {
            "p50_minus_inference_ms": over_floor,
            "p50_ok": over_floor <= P50_OVER_FLOOR_MS,
            "throughput_share": {r["peers"]: r["total_detections_per_s"] / best for r in runs},
            "fair": {r["peers"]: r["fairness_max_dev"] <= FAIRNESS for r in runs},
        }
        print(f"1 peer: p50 - inference p50 = {over_floor:.1f} ms (target ≤ {P50_OVER_FLOOR_MS}); "
              f"throughput share vs 1 peer: " +
              ", ".join(f"N={k}: {v:.2f}" for k, v in verdict["throughput_share"].items()))
    if args.out:
        save_json(args.out, {"runs": runs, "verdict": verdict, "load_start": load_start, "load_end": load()})
    emit("webrtc_e2e", {"runs": [{k: v for k, v in r.items() if k not in ("_series", "per_peer")} for r in runs],
                        "verdict": verdict}, load_start)


if __name__ == "__main__":
    main()
