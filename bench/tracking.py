"""Tracking accuracy and cost of the running server: ``python -m bench.tracking``.

**What is measured: the server's own tracks.** Sequences with exact ground truth are made
here, encoded to H.264 (MPEG-TS, in a temporary folder, never committed), served over
loopback HTTP and pulled by a real server (``python -m rtc_server``, the real model, on a
free loopback port) with ``POST /streams`` — with a line and two zones, at full rate (as
fast as the server's scheduler goes: a file is played at its own frame rate, newest frame
wins) and at ``max_fps`` 5 and 2. The bench follows each stream's Server-Sent Events and
keeps what the server sent: detections with ``track_id``, ``line_cross`` events, running
``counts``. Every message is tied to its generated frame by its ``pts`` (the file's pts,
read back from the file itself: exact).

Then, on **the very same detections** the server reported (each message's non-predicted
boxes, at its pts):

- **anchor**: Roboflow ``trackers``' ByteTrack with timestamps, in its own virtual
  environment as a subprocess (``--anchor-python``; make it with
  ``python3 -m venv /tmp/venv-trackers && /tmp/venv-trackers/bin/pip install trackers==2.6.1``),
  because it does not install beside the server (``docs/tracking.md``);
- **replay**: ``rtc_server.analytics`` run offline on those detections — it gives the
  server's ids (a check that the frame identity and the times are right), except where a
  score rounded in the message (4 decimals) lands on a threshold and takes the other branch.

Scores: ``rtc_server.analytics.evaluate`` (MOTA, IDF1, ID switches) against ground truth;
line counts from the server's events and its ``counts`` against the true crossings (the
anchor's tracks through our line logic).

**The sequences** (deterministic, made in memory): real object crops from coco128, each one
the model finds alone, once, at its labelled class with score >= 0.6 and IoU >= 0.7 at every
size used (screened once, cached under ``$TMPDIR``); 1 s of background first (the stream
opens before the bench has subscribed), then the objects move at constant speed over a
blurred coco128 background and bounce off the edges: two cross the line, each in its own
lane of the top half; three wander in the bottom half, each on one side of the line,
passing in front of each other. Seeds are drawn until no crossing comes within 1 s of the
start of the motion, and the clip ends 1 s or more after the last one: then every true
crossing is one a tracker can count, and "line counts exact" tests the tracker and the line
logic alone.

**Cost**: ``StreamAnalytics.update`` (tracker + 2 lines + 2 zones) at 50 moving boxes, wall
time and per-call CPU time (``time.thread_time_ns``: what other processes' preemption does
not inflate; a noisy host still does). Prints a table, then one JSON line (``bench.common.emit``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import LOOPBACK, ROOT, emit, find_model, load, running_server, summary, table
from rtc_server.analytics import Detections, StreamAnalytics, parse_lines, parse_zones
from rtc_server.analytics.evaluate import FrameTruth, evaluate
from rtc_server.analytics.events import ShapeEvents, reference_points

COCO = ROOT.parent / "shared" / "data" / "coco128"
W, H, FPS = 640, 480, 30
#: Classes whose crops are used (COCO ids): person, car, motorcycle, bus, truck, horse, dog, cow...
CLASSES = (0, 2, 3, 5, 7, 16, 17, 19, 20, 21)
LINE = [{"name": "middle", "a": [0.5, 0.0], "b": [0.5, 1.0]}]
#: Two zones, so that the server does the work a real deployment does (not scored).
ZONES = [{"name": "west", "polygon": [[0, 0], [0.3, 0], [0.3, 1], [0, 1]]},
         {"name": "east", "polygon": [[0.7, 0.1], [1, 0.1], [1, 0.9], [0.7, 0.9]]}]
#: A crop counts as ground truth while at least this share of it is visible.
MIN_VISIBLE = 0.5
#: Frames of background alone before the objects appear.
LEAD = FPS
#: No crossing closer than this (seconds) to the start of the motion or the end.
MARGIN_S = 1.0
#: Object heights (px): every crop is screened at each.
HEIGHTS = (90.0, 120.0, 150.0)
#: max_fps of each rate row (None: as fast as the server goes).
RATES: dict[str, float | None] = {"full": None, "5 fps": 5.0, "2 fps": 2.0}


# ----- crops --------------------------------------------------------------------------------
def _crops(rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """RGB crops of labelled objects of ``CLASSES`` at least 70 px tall, barely overlapped,
    with their class."""
    import cv2

    out = []
    for img_path in sorted((COCO / "images" / "train2017").glob("*.jpg")):
        lbl = COCO / "labels" / "train2017" / (img_path.stem + ".txt")
        if not lbl.is_file():
            continue
        rows = np.loadtxt(lbl, ndmin=2)
        img = None
        for r in rows:
            if int(r[0]) not in CLASSES:
                continue
            if img is None:
                img = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
            ih, iw = img.shape[:2]
            cx, cy, bw, bh = r[1] * iw, r[2] * ih, r[3] * iw, r[4] * ih
            x1, y1, x2, y2 = int(cx - bw / 2), int(cy - bh / 2), int(cx + bw / 2), int(cy + bh / 2)
            if bh < 70 or bw < 40 or bw > 2.5 * bh:
                continue
            others = rows[(rows != r).any(axis=1)]
            ox1, oy1 = (others[:, 1] - others[:, 3] / 2) * iw, (others[:, 2] - others[:, 4] / 2) * ih
            ox2, oy2 = (others[:, 1] + others[:, 3] / 2) * iw, (others[:, 2] + others[:, 4] / 2) * ih
            inter = (np.clip(np.minimum(ox2, x2) - np.maximum(ox1, x1), 0, None)
                     * np.clip(np.minimum(oy2, y2) - np.maximum(oy1, y1), 0, None))
            if inter.size and inter.max() > 0.15 * bw * bh:
                continue
            out.append((img[max(y1, 0):y2, max(x1, 0):x2].copy(), int(r[0])))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _background(rng: np.random.Generator) -> np.ndarray:
    import cv2

    bgs = sorted((COCO / "images" / "train2017").glob("*.jpg"))
    bg = cv2.cvtColor(cv2.imread(str(bgs[int(rng.integers(len(bgs)))])), cv2.COLOR_BGR2RGB)
    return cv2.GaussianBlur(cv2.resize(bg, (W, H)), (0, 0), 25)


def _scaled(crop: np.ndarray, height: float) -> np.ndarray:
    import cv2

    scale = height / crop.shape[0]
    c = cv2.resize(crop, (max(int(crop.shape[1] * scale), 20), max(int(crop.shape[0] * scale), 20)))
    return c[:, :W // 3]


def screened_crops(crops: list[tuple[np.ndarray, int]], limit: int) -> list[int]:
    """The crops the model finds strongly on their own, and nothing else in them: at every
    height of ``HEIGHTS``, on two backgrounds, exactly one detection at score >= 0.2 (the
    server keeps 0.25), of the crop's class, with score >= 0.6 and IoU >= 0.7 with the pasted
    box. Ground truth the detector cannot see measures the detector, not the trackers; a
    bystander inside a crop (a person beside a bus) would be a second object crossing the
    line that the ground truth does not have. yolo11n on onnxruntime f32 here; the server's
    backend may round differently, hence the margins."""
    from rtc_server.analytics.tracker import iou_matrix
    from rtc_server.engine.loader import load_detector
    from rtc_server.engine.yolo import Thresholds

    detector = load_detector(find_model(), backend="onnxruntime", precision="f32")
    backgrounds = [_background(np.random.default_rng(s)) for s in (99, 7)]
    keep = []
    for i, (crop, cls) in enumerate(crops[:limit]):
        ok = True
        for height in HEIGHTS:
            c = _scaled(crop, height)
            h, w = c.shape[:2]
            for bg in backgrounds:
                frame = bg.copy()
                x, y = (W - w) // 2, (H - h) // 2
                frame[y:y + h, x:x + w] = c
                found = detector.detect([frame], [Thresholds(conf=0.2)])[0].detections
                truth = np.array([[x, y, x + w, y + h]], dtype=np.float64)
                if len(found) != 1 or found[0].class_id != cls or found[0].score < 0.6 \
                        or iou_matrix(truth, np.array([found[0].box], dtype=np.float64))[0, 0] < 0.7:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            keep.append(i)
    return keep


# ----- sequences --------------------------------------------------------------------------------
@dataclass
class Sequence_:
    seed: int
    frames: list[np.ndarray]
    truth: list[FrameTruth]
    #: True line crossings (left, right) by the objects' bottom centres.
    crossings: tuple[int, int]
    classes: list[int] = field(default_factory=list)


#: Objects that cross the line, each in its own lane of the top half (never overlapped), and
#: objects that wander in the bottom half, each within one side of the line (they pass in
#: front of each other there: the occlusions, away from the line).
CROSSERS, LANE = 2, H // 4
CROSSER_HEIGHTS = (90.0, LANE - 4.0)


def _trajectories(rng: np.random.Generator, sizes: list[tuple[int, int]], n_frames: int) -> np.ndarray:
    """``(frames, objects, 4)`` integer xyxy rects: still during the lead-in, then constant
    velocity, bouncing off the edges of each object's box. Crossers (the first ``CROSSERS``)
    run horizontally in their lanes and start moving away from the line; wanderers move in
    any direction within their half of the bottom half."""
    boxes, objs = [], []
    for k, (h, w) in enumerate(sizes):
        speed = rng.uniform(60, 200)
        if k < CROSSERS:
            box = (0.0, float(k * LANE), float(W), float((k + 1) * LANE))
            left = rng.random() < 0.5
            lo, hi = (0.0, W / 2 - 40 - w / 2) if left else (W / 2 + 40 - w / 2, float(W - w))
            x = rng.uniform(lo, max(lo, hi))
            o = [x, rng.uniform(box[1], box[3] - h), -speed if left else speed, 0.0]
        else:
            left = rng.random() < 0.5
            box = (0.0, H / 2, W / 2 - 20, float(H)) if left else (W / 2 + 20, H / 2, float(W), float(H))
            angle = rng.uniform(0, 2 * np.pi)
            o = [rng.uniform(box[0], box[2] - w), rng.uniform(box[1], box[3] - h),
                 speed * np.cos(angle), speed * np.sin(angle)]
        boxes.append(box)
        objs.append(o)
    rects = np.zeros((n_frames, len(sizes), 4), dtype=np.int64)
    for f in range(n_frames):
        for k, ((h, w), o, (bx1, by1, bx2, by2)) in enumerate(zip(sizes, objs, boxes, strict=True)):
            x, y = round(o[0]), round(o[1])
            rects[f, k] = (x, y, x + w, y + h)
            if f < LEAD:
                continue
            o[0] += o[2] / FPS
            o[1] += o[3] / FPS
            if o[0] < bx1 or o[0] > bx2 - w:
                o[2] = -o[2]
                o[0] = float(np.clip(o[0], bx1, bx2 - w))
            if o[1] < by1 or o[1] > by2 - h:
                o[3] = -o[3]
                o[1] = float(np.clip(o[1], by1, by2 - h))
    return rects


def _crossings(rects: np.ndarray) -> list[tuple[int, int, int]]:
    """(frame, object, +1 moving to +x / -1) of every crossing of x = W/2 by a bottom centre."""
    side = np.sign((rects[:, :, 0] + rects[:, :, 2]) / 2 - W / 2)
    out = []
    for k in range(rects.shape[1]):
        s = np.where(side[:, k] == 0, 1, side[:, k])
        for f in np.flatnonzero(s[1:] != s[:-1]):
            out.append((int(f) + 1, k, int(s[f + 1])))
    return out


def _countable(rects: np.ndarray) -> int | None:
    """The frame to end the sequence at (the first from ``len(rects) - 3 s`` with no crossing
    in its last ``MARGIN_S``), or None where a crossing comes within ``MARGIN_S`` of the start
    of the motion or two objects overlap while one of them is within 0.5 s of a crossing or
    their bottom centres are on both sides of the line (the lanes make both impossible: checked)."""
    margin = round(MARGIN_S * FPS)
    cross = _crossings(rects)
    if any(f < LEAD + margin for f, _k, _d in cross):
        return None
    cx = np.sign((rects[:, :, 0] + rects[:, :, 2]) / 2 - W / 2)
    near = np.zeros(rects.shape[:2], dtype=bool)
    for f, k, _d in cross:
        near[max(0, f - FPS // 2):f + FPS // 2 + 1, k] = True
    for i in range(rects.shape[1]):
        for j in range(i + 1, rects.shape[1]):
            a, b = rects[:, i], rects[:, j]
            overlap = (np.minimum(a[:, 2], b[:, 2]) > np.maximum(a[:, 0], b[:, 0])) \
                & (np.minimum(a[:, 3], b[:, 3]) > np.maximum(a[:, 1], b[:, 1]))
            if (overlap & ((cx[:, i] != cx[:, j]) | near[:, i] | near[:, j])).any():
                return None
    frames = sorted(f for f, _k, _d in cross)
    for end in range(rects.shape[0] - 3 * FPS, rects.shape[0] + 1):
        if not any(end - margin <= f for f in frames if f < end):
            return end
    return None


def make_sequence(index: int, motion_s: float, n_objects: int, crops: list[tuple[np.ndarray, int]]) -> Sequence_:
    """The first seed from ``1000 * index`` whose motion is ``_countable``, rendered: 1 s of
    background, then ``motion_s`` to ``motion_s + 3`` s of motion."""
    for seed in range(1000 * index, 1000 * index + 1000):
        rng = np.random.default_rng(seed)
        picked = [crops[int(i)] for i in rng.choice(len(crops), size=n_objects, replace=False)]
        scaled = [_scaled(c, rng.uniform(*(CROSSER_HEIGHTS if k < CROSSERS else (HEIGHTS[0], HEIGHTS[-1]))))
                  for k, (c, _cls) in enumerate(picked)]
        rects = _trajectories(rng, [c.shape[:2] for c in scaled], LEAD + round((motion_s + 3) * FPS))
        end = _countable(rects)
        if end is not None:
            rects = rects[:end]
            break
    else:
        raise RuntimeError(f"no countable motion for sequence {index} in 1000 seeds")
    bg = _background(rng)
    frames, truth = [], []
    for f in range(rects.shape[0]):
        frame = bg.copy()
        if f < LEAD:
            frames.append(frame)
            truth.append(FrameTruth.of([], []))
            continue
        owner = np.full((H, W), -1, dtype=np.int16)
        for k, c in enumerate(scaled):
            x1, y1, x2, y2 = rects[f, k]
            frame[y1:y2, x1:x2] = c
            owner[y1:y2, x1:x2] = k
        ids, boxes = [], []
        for k in range(n_objects):
            x1, y1, x2, y2 = rects[f, k]
            if np.count_nonzero(owner[y1:y2, x1:x2] == k) >= MIN_VISIBLE * (x2 - x1) * (y2 - y1):
                ids.append(k)
                boxes.append([x1, y1, x2, y2])
        frames.append(frame)
        truth.append(FrameTruth.of(ids, boxes))
    # The line runs from the top (a) to the bottom (b): facing down the screen, moving to
    # +x is moving to the viewer's left (rtc_server.analytics.geometry).
    cross = _crossings(rects)
    left = sum(1 for _f, _k, d in cross if d > 0)
    return Sequence_(seed, frames, truth, (left, len(cross) - left), [cls for _c, cls in picked])


def encode(seq: Sequence_, path: Path) -> list[int]:
    """The frames as H.264 in MPEG-TS (near-lossless, no B-frames); returns the pts of each
    frame as a decoder reads them back from the file — the key that ties a message to its frame."""
    import av

    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "14", "g": str(FPS),
                          "keyint_min": str(FPS)}
        for index, rgb in enumerate(seq.frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        pts = [int(frame.pts) for frame in container.decode(video=0)]
    if len(pts) != len(seq.frames) or len(set(pts)) != len(pts):
        raise RuntimeError(f"{path}: {len(pts)} decoded frames (distinct pts) for {len(seq.frames)} encoded")
    return pts


# ----- the server ----------------------------------------------------------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _MediaServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the demuxer hanging up after probing
            super().handle_error(request, client_address)


def serve_folder(folder: Path) -> ThreadingHTTPServer:
    """A loopback HTTP server for ``folder`` in a thread (MPEG-TS needs no ``Range``)."""
    httpd = _MediaServer((LOOPBACK, 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True, name="media").start()
    return httpd


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as response:
        return dict(json.loads(response.read()))


def follow(base: str, source: str, max_fps: float | None, timeout_s: float) -> tuple[list[dict[str, Any]], float]:
    """``POST /streams`` for ``source`` and read its SSE until the stream closes (the file
    ended); every message, and the seconds from the 201 to the close."""
    body: dict[str, Any] = {"url": source, "lines": LINE, "zones": ZONES}
    if max_fps is not None:
        body["max_fps"] = max_fps
    answer = _post(f"{base}/streams", body)
    started = time.perf_counter()
    messages: list[dict[str, Any]] = []
    with urllib.request.urlopen(f"{base}/sessions/{answer['id']}/events", timeout=timeout_s) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            messages.append(message)
            if message.get("type") == "closed":
                break
    return messages, time.perf_counter() - started


@dataclass
class Run:
    """What the server sent for one sequence at one rate, tied to frame indices."""

    frames: list[int]                       # frame index of each detection message
    hyp: list[FrameTruth]                   # its confirmed, observed tracks
    dets: list[Detections]                  # its non-predicted detections (what the trackers get)
    server_ids: list[np.ndarray]            # track ids of those detections (-1: tentative)
    events: tuple[int, int]                 # line_cross events (left, right)
    counts: tuple[int, int]                 # the last running count (left, right)
    seconds: float
    closed: str


def parse_run(messages: list[dict[str, Any]], pts_to_frame: dict[int, int], seconds: float) -> Run:
    frames, hyp, dets, server_ids = [], [], [], []
    events = [0, 0]
    counts = (0, 0)
    closed = ""
    for m in messages:
        kind = m.get("type")
        if kind == "detections":
            frames.append(pts_to_frame[int(m["pts"])])
            seen = [d for d in m["detections"] if not d.get("predicted")]
            boxes = np.array([d["box"] for d in seen], dtype=np.float64).reshape(-1, 4)
            ids = np.array([-1 if d.get("track_id") is None else d["track_id"] for d in seen], dtype=np.int64)
            dets.append(Detections.of(boxes, [d["score"] for d in seen], [d["class_id"] for d in seen]))
            server_ids.append(ids)
            hyp.append(FrameTruth(ids[ids >= 0], boxes[ids >= 0]))
            if "counts" in m:
                c = m["counts"]["lines"]["middle"]
                counts = (c["left"], c["right"])
        elif kind == "event" and m.get("event") == "line_cross":
            events[0 if m["direction"] == "left" else 1] += 1
        elif kind == "closed":
            closed = str(m.get("reason"))
    return Run(frames, hyp, dets, server_ids, (events[0], events[1]), counts, seconds, closed)


# ----- the other trackers, offline on the server's detections ------------------------------------------
def replay_ours(run: Run) -> list[np.ndarray]:
    """``rtc_server.analytics`` offline on the run's detections at their frames' times."""
    a = StreamAnalytics(class_names=())
    out = []
    for f, d in zip(run.frames, run.dets, strict=True):
        tr = a.tracker.update(d, f / FPS)
        out.append(tr.track_ids[:tr.n_detections].copy())
    return out


ANCHOR = r"""
import json, sys, time
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker
jobs = json.load(open(sys.argv[1]))
result = {}
for name, frames in jobs.items():
    tr = ByteTrackTracker(frame_rate=30.0)
    out_frames = []
    for t, boxes, scores, classes in frames:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        d = sv.Detections(xyxy=b, confidence=np.asarray(scores, dtype=np.float64),
                          class_id=np.asarray(classes, dtype=int))
        out = tr.update(d, timestamp=t)
        keep = out.tracker_id >= 0
        out_frames.append([out.tracker_id[keep].tolist(), out.xyxy[keep].tolist()])
    result[name] = out_frames
# cost per update at 50 boxes
rng = np.random.default_rng(0)
xs, ys = rng.uniform(0, 1200, 50), rng.uniform(0, 600, 50)
tr = ByteTrackTracker(frame_rate=30.0)
times = []
for k in range(600):
    b = np.stack([xs + k, ys, xs + k + 30, ys + 60], 1)
    d = sv.Detections(xyxy=b, confidence=np.full(50, 0.9), class_id=np.zeros(50, dtype=int))
    t0 = time.thread_time_ns(); tr.update(d, timestamp=k / 30); times.append(time.thread_time_ns() - t0)
result["cost_cpu_us"] = float(np.median(times[100:]) / 1e3)
print(json.dumps(result))
"""


def run_anchor(python: str, runs: dict[str, Run]) -> dict[str, Any] | str:
    if not Path(python).is_file():
        return f"not run: no {python} (see the module docstring)"
    jobs = {name: [[f / FPS, d.boxes.tolist(), d.scores.tolist(), d.class_ids.tolist()]
                   for f, d in zip(run.frames, run.dets, strict=True)] for name, run in runs.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="rtc-bench-anchor-") as f:
        json.dump(jobs, f)
        f.flush()
        p = subprocess.run([python, "-c", ANCHOR, f.name], capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        return f"failed: {p.stderr.strip()[-400:]}"
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def line_counts(tracks: list[FrameTruth], frames: list[int]) -> tuple[int, int]:
    """Left/right crossings of the bench's line by these tracks (our line logic)."""
    ev = ShapeEvents((), parse_lines(LINE))
    for tr, f in zip(tracks, frames, strict=True):
        ev.update(tr.ids, np.zeros(len(tr.ids), dtype=np.int64), reference_points(tr.boxes, W, H), f / FPS, (), {})
    c = ev.counts()["lines"]["middle"]
    return c["left"], c["right"]


# ----- cost ---------------------------------------------------------------------------------------
def cost_per_message(n_boxes: int = 50, n_frames: int = 1500) -> dict[str, dict[str, float]]:
    """StreamAnalytics.update (tracker + 2 lines + 2 zones) at ``n_boxes`` moving boxes:
    wall and CPU time per call, in microseconds."""
    a = StreamAnalytics(
        lines=parse_lines([{"name": "v", "a": [0.5, 0], "b": [0.5, 1]}, {"name": "h", "a": [0, 0.5], "b": [1, 0.5]}]),
        zones=parse_zones([{"name": "l", "polygon": [[0, 0], [0.4, 0], [0.4, 1], [0, 1]]},
                           {"name": "r", "polygon": [[0.6, 0.2], [1, 0.2], [0.9, 0.9], [0.7, 0.8]]}]),
        class_names=("person",))
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(0, 1200, n_boxes), rng.uniform(0, 600, n_boxes)
    vx, vy = rng.uniform(-3, 3, n_boxes), rng.uniform(-2, 2, n_boxes)
    wall, cpu = [], []
    for k in range(n_frames):
        x, y = xs + vx * k, ys + vy * k
        d = Detections.of(np.stack([x, y, x + 30, y + 60], 1), np.full(n_boxes, 0.9), np.zeros(n_boxes))
        t0, c0 = time.perf_counter(), time.thread_time_ns()
        a.update(d, k / FPS, width=1280, height=720, frame_id=k)
        cpu.append((time.thread_time_ns() - c0) / 1e3)
        wall.append((time.perf_counter() - t0) * 1e6)
    return {"wall_us": summary(wall[100:]), "cpu_us": summary(cpu[100:])}


# ----- main ---------------------------------------------------------------------------------------
def _sequences(args: argparse.Namespace) -> list[Sequence_]:
    crops = _crops(np.random.default_rng(0))
    picked = Path(tempfile.gettempdir()) / f"rtc-bench-tracking-crops-{len(crops)}-{args.screen}-v4.json"
    if picked.is_file():
        keep = json.loads(picked.read_text())
    else:
        t0 = time.perf_counter()
        keep = screened_crops(crops, args.screen)
        picked.write_text(json.dumps(keep))
        print(f"screened {args.screen} crops in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"{len(keep)} of {args.screen} crops the model finds strongly on their own", file=sys.stderr)
    return [make_sequence(s, args.seconds, args.objects, [crops[i] for i in keep])
            for s in range(args.sequences)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequences", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="motion per sequence, at least (after 1 s of background; up to 3 s more, to end "
                         "clear of crossings)")
    ap.add_argument("--objects", type=int, default=5, help=f"per sequence ({CROSSERS} of them cross the line)")
    ap.add_argument("--screen", type=int, default=80, help="crops screened (the first, shuffled)")
    ap.add_argument("--rates", default=",".join(RATES), help=f"rows to run, of {', '.join(RATES)}")
    ap.add_argument("--model", default=None)
    ap.add_argument("--keep", default=None, help="pickle the runs, ground truth and the anchor's tracks here")
    ap.add_argument("--anchor-python", default=os.environ.get("ANCHOR_PYTHON", "/tmp/venv-trackers/bin/python"))
    args = ap.parse_args(argv)
    rates = {r: RATES[r] for r in args.rates.split(",")}
    load_start = load()
    seqs = _sequences(args)
    runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory(prefix="rtc-bench-tracking-") as folder:
        keys = []
        for s, seq in enumerate(seqs):
            pts = encode(seq, Path(folder) / f"seq{s}.ts")
            keys.append({p: i for i, p in enumerate(pts)})
        httpd = serve_folder(Path(folder))
        env = {"RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_DATA_DIR": str(Path(folder) / "data")}
        try:
            with running_server(find_model(args.model), env=env) as server:
                for rate, max_fps in rates.items():
                    for s, seq in enumerate(seqs):
                        source = f"http://{LOOPBACK}:{httpd.server_address[1]}/seq{s}.ts"
                        messages, seconds = follow(server.url, source, max_fps, timeout_s=60 + len(seq.frames) / FPS)
                        run = runs[f"{s}/{rate}"] = parse_run(messages, keys[s], seconds)
                        print(f"sequence {s} at {rate}: {len(run.frames)} detection messages for "
                              f"{len(seq.frames)} frames in {seconds:.1f} s (load {os.getloadavg()[0]:.1f})",
                              file=sys.stderr)
        finally:
            httpd.shutdown()
    anchor = run_anchor(args.anchor_python, runs)
    if args.keep:
        with open(args.keep, "wb") as f:   # for looking into a run afterwards (pickle: our own file)
            pickle.dump({"runs": runs, "truth": [s.truth for s in seqs], "crossings": [s.crossings for s in seqs],
                         "anchor": anchor}, f)

    rows, result = [], {"rates": {}}
    for rate in rates:
        per: dict[str, Any] = {}
        mine = [runs[f"{s}/{rate}"] for s in range(len(seqs))]
        n_msgs = sum(len(r.frames) for r in mine)
        video_s = sum((len(seq.frames) - LEAD) / FPS for seq in seqs)
        # detections/s over the objects' motion (the lead-in is partly before the bench subscribed)
        moving = sum(sum(1 for f in r.frames if f >= LEAD) for r in mine)
        rate_dps = moving / video_s
        truth = (sum(seq.crossings[0] for seq in seqs), sum(seq.crossings[1] for seq in seqs))
        # The replay sees the message's rounding (scores to 4 decimals, boxes to 2): a score
        # that rounds onto a threshold (0.5, 0.7) can take another branch than on the server.
        replay_differs = sum(not np.array_equal(a, b) for r in mine
                             for a, b in zip(replay_ours(r), r.server_ids, strict=True))
        for who in ("server", "anchor"):
            if who == "anchor" and isinstance(anchor, str):
                continue
            gt_all, hyp_all, lines = [], [], [0, 0]
            for s, (seq, run) in enumerate(zip(seqs, mine, strict=True)):
                if who == "server":
                    tracks = run.hyp
                else:
                    assert isinstance(anchor, dict)
                    tracks = [FrameTruth.of(i, b) for i, b in anchor[f"{s}/{rate}"]]
                    lc = line_counts(tracks, run.frames)
                    lines[0] += lc[0]
                    lines[1] += lc[1]
                # Ids are per sequence: offset them so sequences concatenate into one score.
                gt_all += [FrameTruth(seq.truth[f].ids + 1000 * s, seq.truth[f].boxes) for f in run.frames]
                hyp_all += [FrameTruth(t.ids + 100000 * s, t.boxes) for t in tracks]
            if who == "server":
                lines = [sum(r.events[0] for r in mine), sum(r.events[1] for r in mine)]
                counted = (sum(r.counts[0] for r in mine), sum(r.counts[1] for r in mine))
            sc = evaluate(gt_all, hyp_all)
            per[who] = {**sc.to_dict(), "line_left": lines[0], "line_right": lines[1]}
            if who == "server":
                per[who]["counts_left"], per[who]["counts_right"] = counted
            rows.append([rate, f"{rate_dps:.1f}", who, sc.mota, sc.idf1, sc.id_switches, sc.false_negatives,
                         sc.false_positives, f"{lines[0]}/{lines[1]}",
                         f"{counted[0]}/{counted[1]}" if who == "server" else "—", f"{truth[0]}/{truth[1]}"])
        per["detections_per_s"] = rate_dps
        per["messages"] = n_msgs
        per["truth_left"], per["truth_right"] = truth
        per["replay_differs"] = replay_differs
        per["closed"] = sorted({r.closed for r in mine})
        per["first_frame"] = max(r.frames[0] for r in mine) if all(r.frames for r in mine) else None
        result["rates"][rate] = per
    cost = cost_per_message()
    result["cost_us_50_boxes"] = cost
    result["anchor"] = anchor if isinstance(anchor, str) else {"cost_cpu_us_50_boxes": anchor["cost_cpu_us"]}
    print(table(["rate", "det/s", "tracks", "MOTA", "IDF1", "ID sw", "FN", "FP", "line events L/R",
                 "counts L/R", "truth L/R"], rows))
    for rate in rates:
        p = result["rates"][rate]
        print(f"{rate}: {p['messages']} messages; rtc_server.analytics replayed on the server's detections "
              f"gives other ids than the server's in {p['replay_differs']} of them; "
              f"closed: {', '.join(p['closed'])}; latest first frame seen {p['first_frame']} (lead-in {LEAD})")
    w, c = cost["wall_us"], cost["cpu_us"]
    print(f"\nStreamAnalytics.update, tracker + 2 lines + 2 zones at 50 boxes: CPU p50 {c['p50']:.0f} us "
          f"(p95 {c['p95']:.0f}), wall p50 {w['p50']:.0f} us (p95 {w['p95']:.0f})"
          + ("" if isinstance(anchor, str) else f"; anchor's ByteTrack alone: CPU p50 {anchor['cost_cpu_us']:.0f} us"))
    if isinstance(anchor, str):
        print(f"anchor: {anchor}")
    result["sequences"] = {"count": len(seqs), "seconds": args.seconds, "objects": args.objects,
                           "seeds": [s.seed for s in seqs], "classes": [s.classes for s in seqs],
                           "key": hashlib.sha256(str([s.seed for s in seqs]).encode()).hexdigest()[:12]}
    emit("tracking", result, load_start)


if __name__ == "__main__":
    main()
