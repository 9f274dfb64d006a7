"""Plots for docs/benchmarks.md from the JSON that ``make bench`` saves in artifacts/bench/.

* ``docs/bench_latency_over_time.png``: per-frame latency over the run, ours vs the naive
  every-frame aiortc pattern (from ``alternatives.json``).
* ``docs/bench_throughput_vs_peers.png``: total and per-peer detections/s against the
  number of peers (from ``webrtc_e2e.json``).

    python -m bench.plots [--src artifacts/bench] [--dest docs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import ROOT


def pyplot() -> Any:
    """matplotlib (the ``bench`` extra), headless; imported on use so ``--help`` needs nothing extra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_over_time(alternatives: dict, dest: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"ours": ("ours: newest frame only", "tab:blue"), "naive": ("naive aiortc: every frame", "tab:red")}
    for name, (label, color) in styles.items():
        series = alternatives["runs"].get(name, {}).get("_series")
        if series:
            # x = when the answer arrived: the naive server's answers keep coming, ever later.
            arrived = [t + v / 1000 for t, v in zip(series["t"], series["latency_ms"], strict=True)]
            ax.plot(arrived, [v / 1000 for v in series["latency_ms"]], ".", ms=3, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time the detections arrived, since the stream started (s)")
    ax.set_ylabel("frame → detections latency (s, log)")
    ax.set_title("1 peer, 640x480 at 30 fps, YOLO11n on 2 shared cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = dest / "bench_latency_over_time.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_vs_peers(e2e: dict, dest: Path) -> Path:
    runs = sorted(e2e["runs"], key=lambda r: r["peers"])
    peers = [r["peers"] for r in runs]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(peers, [r["total_detections_per_s"] for r in runs], "o-", label="total detections/s")
    for r in runs:
        rates = r["per_peer_detections_per_s"]
        ax.plot([r["peers"]] * len(rates), rates, "x", color="tab:orange")
    ax.plot([], [], "x", color="tab:orange", label="each peer")
    single = next((r["total_detections_per_s"] for r in runs if r["peers"] == 1), None)
    if single:
        ax.axhline(0.9 * single, ls="--", color="grey", label="90 % of 1 peer")
    # The model's in-run speed explains most of the total's ups and downs on a shared host.
    right = ax.twinx()
    right.plot(peers, [r["inference_ms"]["p50"] for r in runs], "s:", color="tab:green", label="inference p50 (ms)")
    right.set_ylabel("inference p50 per frame (ms)", color="tab:green")
    right.set_ylim(bottom=0)
    right.legend(loc="upper right")
    ax.set_xscale("log", base=2)
    ax.set_xticks(peers, [str(p) for p in peers])
    ax.set_xlabel("peers (each 640x480 at 30 fps)")
    ax.set_ylabel("detections/s")
    ax.set_title("Throughput vs peers, one server on 2 shared cores")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    path = dest / "bench_throughput_vs_peers.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=ROOT / "artifacts" / "bench")
    parser.add_argument("--dest", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    made = []
    if (args.src / "alternatives.json").is_file():
        made.append(latency_over_time(json.loads((args.src / "alternatives.json").read_text()), args.dest))
    if (args.src / "webrtc_e2e.json").is_file():
        made.append(throughput_vs_peers(json.loads((args.src / "webrtc_e2e.json").read_text()), args.dest))
    print(json.dumps({"bench": "plots", "written": [str(p) for p in made]}))


if __name__ == "__main__":
    main()
