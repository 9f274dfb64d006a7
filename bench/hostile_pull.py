"""Hostile pull sources (issue 20): what one ``POST /streams`` from a hostile client costs the
server — how long the POST takes to answer, the worst ``/healthz`` answer meanwhile (the
event loop), and the server process's RSS growth.

Attacks, each from a server on loopback that stops by itself (``tests/hostile_media.py``):

- ``endless_segments``: an HLS playlist that never ends, one segment line after another
  (FFmpeg keeps each), as fast as loopback takes them, at most ``--seconds`` and
  ``--max-mb`` MiB sent (128 by default: the code before the fix grows by several times
  what it reads);
- ``endless_bytes``: the same with long comment lines (FFmpeg reads and drops them);
- ``huge_frames``: an 8192x8192 MJPEG clip (three flat frames, ``"loop": true``), watched
  for ``--seconds`` after the POST.

``--tree DIR`` runs the server from another checkout (the code before the fix:
``git worktree add /tmp/before 3b0643f``). The server runs as its own process, so its RSS
is its own; ``/healthz`` is asked every 50 ms from a thread of this process.

    python -m bench.hostile_pull [--tree /tmp/before] [--seconds 30] [--max-mb 128]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, find_model, load, running_server, table
from tests.hostile_media import EndlessPlaylist, HealthProbe, StaticFolder, make_huge_clip

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_stream(base: str, body: dict[str, Any], timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(base + "/streams", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"


def attack_endless_playlist(base: str, pid: int, mode: str, seconds: float, max_bytes: int) -> dict[str, Any]:
    attack = EndlessPlaylist(mode, max_seconds=seconds, max_bytes=max_bytes).start()
    try:
        with HealthProbe(base, pid) as probe:
            started = time.monotonic()
            status, text = post_stream(base, {"url": attack.url}, timeout=seconds + 60)
            answered = time.monotonic() - started
            time.sleep(1.0)  # what it left behind
    finally:
        attack.stop()
    return {"attack": f"endless_{mode}", "status": status, "answer_s": answered, "sent_mb": attack.sent / 2**20,
            "healthz_worst_s": probe.worst, "healthz_failures": probe.failures,
            "rss_growth_mb": probe.rss_growth / 2**20, "detail": text[:160]}


def attack_huge_frames(base: str, pid: int, seconds: float, folder: Path) -> dict[str, Any]:
    with StaticFolder(folder) as files, HealthProbe(base, pid) as probe:
        started = time.monotonic()
        status, text = post_stream(base, {"url": f"http://127.0.0.1:{files.port}/huge.mkv", "loop": True},
                                   timeout=60)
        answered = time.monotonic() - started
        time.sleep(max(0.0, seconds - answered))  # the stream plays (before) or is long gone (after)
        if status == 201:
            stream_id = json.loads(text)["id"]
            _HTTP.open(urllib.request.Request(f"{base}/streams/{stream_id}", method="DELETE"), timeout=30).read()
    return {"attack": "huge_frames", "status": status, "answer_s": answered, "sent_mb": float("nan"),
            "healthz_worst_s": probe.worst, "healthz_failures": probe.failures,
            "rss_growth_mb": probe.rss_growth / 2**20, "detail": text[:160]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout the server runs from")
    parser.add_argument("--seconds", type=float, default=30.0, help="longest time of each attack")
    parser.add_argument("--max-mb", type=float, default=128.0, help="most MiB an endless playlist sends")
    args = parser.parse_args()
    load_start = load()
    folder = Path("/tmp/rtc-hostile-media/bench")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "huge.mkv").exists():
        make_huge_clip(folder / "huge.mkv", 8192, 8192)
    env = {"RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.1/32", "RTC_SOURCE_OPEN_TIMEOUT": "10"}
    results = []
    for attack in ("endless_segments", "endless_bytes", "huge_frames"):
        with running_server(find_model(), env=env, cwd=args.tree.resolve()) as server:
            time.sleep(2.0)  # settle after start
            if attack.startswith("endless_"):
                results.append(attack_endless_playlist(server.url, server.pid, attack.removeprefix("endless_"),
                                                       args.seconds, int(args.max_mb * 2**20)))
            else:
                results.append(attack_huge_frames(server.url, server.pid, min(args.seconds, 15.0), folder))
    rows = [[r["attack"], r["status"], f"{r['answer_s']:.1f}", f"{r['sent_mb']:.0f}", f"{r['healthz_worst_s']:.3f}",
             r["healthz_failures"], f"{r['rss_growth_mb']:.0f}"] for r in results]
    print(table(["attack", "POST status", "answered after s", "sent MiB", "worst /healthz s", "failed /healthz",
                 "RSS growth MiB"], rows))
    emit("hostile_pull", {"tree": str(args.tree), "results": results}, load_start)


if __name__ == "__main__":
    main()
