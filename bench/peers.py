"""Drive N aiortc client peers against a server for a while; collect frame-matched latency.

Each peer is a ``DetectionClient`` with its own ``ImageTrack`` (the bus frame at 640x480,
in a few shifted copies so the VP8 encoder sees motion as from a camera, not a still
image it could encode for free). A reply is matched to the frame it answers by pts, so
latency is frame handed to the sender → its detections received, per frame.

The peers run in the calling process, separate from the server process; their VP8 encoding
competes with the server for the same cores, which the results report (``client_cpu``).
With ``replay="h264"`` (or ``"vp8"``) each peer instead sends a clip encoded once
(``drivers/replay.py``): no encoder runs per frame, so the client costs little and the
cores go to the server being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.common import bus_rgb, slope_per_minute, summary
from drivers.client import DetectionClient, ImageTrack, SentTrack
from drivers.replay import EncodedClip, ReplayTrack, encode_clip, panning_frames
from rtc_server.webrtc.ice import use_host_addresses

#: Replies in the first seconds (connection set-up, encoder ramp-up) are not counted.
WARMUP_S = 3.0


def camera_frames(width: int = 640, height: int = 480, count: int = 6, step: int = 4) -> list[np.ndarray]:
    base = bus_rgb(width, height)
    return [np.ascontiguousarray(np.roll(base, i * step, axis=1)) for i in range(count)]


@dataclass
class PeerResult:
    """One peer's run: latency series (seconds since its start, ms) and frame counts."""

    times_s: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    #: server_ms minus its measured stages: thread → event loop hand-offs, waiting for the GIL.
    handoff_ms: list[float] = field(default_factory=list)
    #: preprocess (incl. YUV -> RGB) + postprocess, as the server measured them.
    prepost_ms: list[float] = field(default_factory=list)
    sent: int = 0
    replies: int = 0
    window_s: float = 0.0
    server_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": summary(self.latency_ms),
            "inference_ms": summary(self.inference_ms),
            "server_ms": summary(self.server_ms),
            "queue_ms": summary(self.queue_ms),
            "detections_per_s": self.replies / self.window_s if self.window_s else float("nan"),
            "slope_ms_per_min": slope_per_minute(self.times_s, self.latency_ms),
            "frames_sent": self.sent,
            "server_frames": self.server_counts,
            "error": self.error,
        }


async def _run_peer(url: str, fps: float, duration_s: float, frames: list[np.ndarray],
                    clip: EncodedClip | None = None) -> PeerResult:
    result = PeerResult()
    track: SentTrack = ImageTrack(frames, fps=fps) if clip is None else ReplayTrack(clip, fps=fps)
    client = DetectionClient(url, track, codecs=() if clip is None else (clip.mime,))
    try:
        await client.connect()
        await asyncio.sleep(duration_s)
    except Exception as exc:  # a failed peer is a result to report, not a crash of the run
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    sent_at = client.track.sent_at
    if not sent_at:
        return result
    start = min(sent_at.values())
    messages: list[dict[str, Any]] = []
    while not client.messages.empty():
        messages.append(client.messages.get_nowait())
    detections = [m for m in messages if m.get("type") == "detections"]
    window_start, window_end = start + WARMUP_S, start + duration_s
    for m in detections:
        latency = client.latency_ms(m)
        if latency is None:
            continue
        sent = sent_at[m["pts"]]
        if not window_start <= sent <= window_end:
            continue
        result.times_s.append(sent - start)
        result.latency_ms.append(latency)
        result.inference_ms.append(m["timing"]["inference_ms"])
        result.server_ms.append(m["timing"]["server_ms"])
        result.queue_ms.append(m["timing"]["queue_ms"])
        timing = m["timing"]
        result.prepost_ms.append(timing["preprocess_ms"] + timing["postprocess_ms"])
        result.handoff_ms.append(timing["server_ms"] - timing["queue_ms"] - timing["preprocess_ms"]
                                 - timing["inference_ms"] - timing["postprocess_ms"])
    # Throughput counts replies by arrival time: a backlogged server answers late, not never.
    result.replies = sum(1 for m in detections if m.get("pts") in client.received_at
                         and window_start <= client.received_at[m["pts"]] <= window_end)
    result.window_s = max(0.0, duration_s - WARMUP_S)
    result.sent = len(sent_at)
    if detections and "frames" in detections[-1]:
        result.server_counts = detections[-1]["frames"]
    return result


async def run_peers(url: str, peers: int, duration_s: float, fps: float = 30.0,
                    replay: str | None = None) -> list[PeerResult]:
    """``peers`` clients at once for ``duration_s`` seconds each; loopback ICE only.
    ``replay``: a codec (``h264``, ``vp8``) to send a pre-encoded clip in instead of encoding."""
    use_host_addresses(["127.0.0.1"])
    frames = camera_frames()
    clip = None if replay is None else encode_clip(panning_frames(bus_rgb()), replay, fps)
    results = await asyncio.gather(*(_run_peer(url, fps, duration_s, frames, clip) for _ in range(peers)))
    return list(results)


def aggregate(results: list[PeerResult]) -> dict[str, Any]:
    """Totals over the peers of one run: pooled latency, total and per-peer rates, fairness."""
    pooled = [v for r in results for v in r.latency_ms]
    times = [t for r in results for t in r.times_s]
    rates = [r.replies / r.window_s if r.window_s else 0.0 for r in results]
    mean_rate = float(np.mean(rates)) if rates else 0.0
    dropped = sum(r.server_counts.get("dropped", 0) for r in results)
    received = sum(r.server_counts.get("received", 0) for r in results)
    sent = sum(r.sent for r in results)
    return {
        "peers": len(results),
        "latency_ms": summary(pooled),
        "inference_ms": summary([v for r in results for v in r.inference_ms]),
        "queue_ms": summary([v for r in results for v in r.queue_ms]),
        "server_ms": summary([v for r in results for v in r.server_ms]),
        "handoff_ms": summary([v for r in results for v in r.handoff_ms]),
        "prepost_ms": summary([v for r in results for v in r.prepost_ms]),
        # Sender encode + RTP + jitter buffer + decode + data channel: everything outside the server.
        "outside_server_ms": summary([lat - srv for r in results for lat, srv in zip(r.latency_ms, r.server_ms,
                                                                                    strict=True)]),
        "slope_ms_per_min": slope_per_minute(times, pooled),
        "total_detections_per_s": float(sum(rates)),
        # Share of the run the inference thread spent in run(): throughput normalised by the
        # in-run model cost, which load from other processes changes from run to run.
        "inference_busy": float(sum(rates) * np.mean([v for r in results for v in r.inference_ms]) / 1000)
        if any(r.inference_ms for r in results) else float("nan"),
        "per_peer_detections_per_s": rates,
        "fairness_max_dev": (max(abs(r - mean_rate) for r in rates) / mean_rate) if mean_rate else float("nan"),
        "frames_sent": sent,
        "frames_received_by_server": received,
        "frames_dropped_by_server": dropped,
        "frames_lost_in_transit": max(0, sent - received) if received else None,
        "errors": [r.error for r in results if r.error],
    }


def child_commands(url: str, peers: int, duration_s: float, procs: int, replay: str | None = None) -> list[list[str]]:
    """The argv of each ``python -m bench.peers`` child, ``peers`` split evenly over ``procs``.

    Several client processes (and GILs) so the peers' work does not queue behind one
    interpreter; run them with ``cwd=ROOT``.
    """
    shares = [peers // procs + (1 if i < peers % procs else 0) for i in range(procs)]
    return [[sys.executable, "-m", "bench.peers", url, "--peers", str(n), "--duration", str(duration_s),
             *(["--replay", replay] if replay else [])] for n in shares if n]


def child_results(stdout: bytes) -> list[PeerResult]:
    """A child's results: the JSON list on its last line."""
    return [PeerResult(**d) for d in json.loads(stdout.decode().strip().splitlines()[-1])]


def main() -> None:
    """``python -m bench.peers URL --peers N --duration S``: run peers, print their results as JSON.

    ``bench.webrtc_e2e --client-procs K`` (and ``bench.scheduler``) start K of these, so the
    peers' encoding spreads over several processes (and GILs) instead of one.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("url")
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--replay", choices=["h264", "vp8"], default=None,
                        help="send a pre-encoded clip in this codec (no encoder per frame)")
    args = parser.parse_args()
    results = asyncio.run(run_peers(args.url, args.peers, args.duration, args.fps, args.replay))
    print(json.dumps([asdict(r) for r in results]))


if __name__ == "__main__":
    main()
