"""Tracking accuracy and cost: ``python -m bench.tracking``.

Sequences with exact ground truth, made here: real object crops from coco128 (people,
cars, animals... cut out at their labelled boxes) move at constant speed over a blurred
coco128 background, bounce off the frame's edges, pass in front of each other, and cross
a vertical line a known number of times. Nothing is written to the repository; the
detections are cached under ``$TMPDIR`` so a second run skips the model.

The real model (``yolo11n.onnx``, onnxruntime) runs once on every frame; then on the very
same detections:

- **ours**: ``rtc_server.analytics`` (ByteTrack on numpy + scipy, advanced by frame time);
- **anchor**: Roboflow ``trackers``' ByteTrack with timestamps, run in its own virtual
  environment as a subprocess (``--anchor-python``; make it with
  ``python3 -m venv /tmp/venv-trackers && /tmp/venv-trackers/bin/pip install trackers==2.6.1``),
  because it does not install beside the server (``docs/tracking.md``).

Both at full rate (30 fps) and sampled (5 fps: every 6th frame, with its real pts), scored
with ``rtc_server.analytics.evaluate`` (MOTA, IDF1, ID switches), plus line counts against
ground truth and the cost of tracking + 2 lines + 2 zones per message at 50 boxes.
Prints a table, then one JSON line (``bench.common.emit``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, emit, find_model, load, summary, table
from rtc_server.analytics import Detections, StreamAnalytics, parse_lines, parse_zones
from rtc_server.analytics.evaluate import FrameTruth, evaluate
from rtc_server.analytics.events import ShapeEvents, reference_points

COCO = ROOT.parent / "shared" / "data" / "coco128"
W, H, FPS = 640, 480, 30.0
#: Classes whose crops are used (COCO ids): person, car, motorcycle, bus, truck, horse, dog, cow...
CLASSES = (0, 2, 3, 5, 7, 16, 17, 19, 20, 21)
LINE = [{"name": "middle", "a": [0.5, 0.0], "b": [0.5, 1.0]}]
#: A crop counts as ground truth while at least this share of it is visible.
MIN_VISIBLE = 0.5
SAMPLE_EVERY = 6


# ----- sequences -----------------------------------------------------------------------------
@dataclass
class Sequence_:
    frames: list[np.ndarray]
    truth: list[FrameTruth]
    #: ``(objects, frames)``: x of each object's bottom centre, in pixels.
    centres: np.ndarray


def crossings(seq: Sequence_, present: np.ndarray) -> tuple[int, int]:
    """True (left, right) crossings of the bench's line by the objects' bottom centres,
    counting only those where ``present`` (``(objects, frames)``) holds in 80 % of the frames
    within 0.5 s of the crossing (all ones: a tracker that sees an object only after it
    crossed, or for a single frame before, cannot count it; none can). The line runs
    from the top (a) to the bottom (b): facing down the screen, moving to +x is moving to the
    viewer's left."""
    half = int(FPS / 2)
    left = right = 0
    for k, xs in enumerate(seq.centres):
        side = np.sign(xs - W / 2)
        for i in np.flatnonzero(side[1:] * side[:-1] < 0):
            if present[k, max(0, i - half):i + half + 1].mean() >= 0.8:
                if side[i + 1] > side[i]:
                    left += 1
                else:
                    right += 1
    return left, right


def found_by_model(seq: Sequence_, dets: list[Detections]) -> np.ndarray:
    """``(objects, frames)``: the object is in sight and a detection (any score the trackers take, >= 0.1) covers it
    (IoU >= 0.5) — what a tracker can possibly follow."""
    from rtc_server.analytics.tracker import iou_matrix

    out = np.zeros(seq.centres.shape, dtype=bool)
    for f, (t, d) in enumerate(zip(seq.truth, dets, strict=True)):
        strong = d.boxes[d.scores >= 0.1]
        if len(t.ids) and len(strong):
            out[t.ids[iou_matrix(t.boxes, strong).max(axis=1) >= 0.5], f] = True
    return out

def _crops(rng: np.random.Generator) -> list[np.ndarray]:
    """RGB crops of labelled objects of ``CLASSES`` at least 70 px tall, barely overlapped."""
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
            out.append(img[max(y1, 0):y2, max(x1, 0):x2].copy())
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


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


def screened_crops(crops: list[np.ndarray], detector: Any, limit: int = 40) -> list[int]:
    """The crops the model finds on their own (score >= 0.5, IoU >= 0.6 with the pasted box):
    ground truth for objects the detector cannot see measures the detector, not the trackers."""
    from rtc_server.analytics.tracker import iou_matrix
    from rtc_server.engine.yolo import Thresholds

    bg = _background(np.random.default_rng(99))
    keep = []
    for i, crop in enumerate(crops[:limit]):
        c = _scaled(crop, 120)
        h, w = c.shape[:2]
        frame = bg.copy()
        x, y = (W - w) // 2, (H - h) // 2
        frame[y:y + h, x:x + w] = c
        r = detector.detect([frame], [Thresholds(conf=0.5)])[0]
        boxes = np.array([d.box for d in r.detections], dtype=np.float64).reshape(-1, 4)
        if boxes.size and iou_matrix(np.array([[x, y, x + w, y + h]], dtype=np.float64), boxes).max() >= 0.6:
            keep.append(i)
    return keep


def make_sequence(seed: int, n_frames: int, n_objects: int, crops: list[np.ndarray]) -> Sequence_:

    rng = np.random.default_rng(seed)
    bg = _background(rng)
    objs = []
    for k in range(n_objects):
        crop = _scaled(crops[(seed * 7 + k) % len(crops)], rng.uniform(90, 150))
        h, w = crop.shape[:2]
        x = rng.uniform(0, W - w)
        y = rng.uniform(0, H - h)
        speed = rng.uniform(60, 200)
        angle = rng.uniform(-0.5, 0.5) + (0 if rng.random() < 0.5 else np.pi)
        objs.append({"crop": crop, "x": x, "y": y, "vx": speed * np.cos(angle), "vy": speed * np.sin(angle)})
    frames, truth = [], []
    bottoms: list[list[float]] = [[] for _ in objs]
    for _f in range(n_frames):
        frame = bg.copy()
        owner = np.full((H, W), -1, dtype=np.int16)
        rects = []
        for k, o in enumerate(objs):
            h, w = o["crop"].shape[:2]
            x, y = round(o["x"]), round(o["y"])
            frame[y:y + h, x:x + w] = o["crop"]
            owner[y:y + h, x:x + w] = k
            rects.append((x, y, x + w, y + h))
            bottoms[k].append(x + w / 2)
        ids, boxes = [], []
        for k, (x1, y1, x2, y2) in enumerate(rects):
            visible = np.count_nonzero(owner[y1:y2, x1:x2] == k) / ((x2 - x1) * (y2 - y1))
            if visible >= MIN_VISIBLE:
                ids.append(k)
                boxes.append([x1, y1, x2, y2])
        frames.append(frame)
        truth.append(FrameTruth.of(ids, boxes))
        dt = 1.0 / FPS
        for o in objs:   # constant velocity, bouncing off the edges
            h, w = o["crop"].shape[:2]
            o["x"] += o["vx"] * dt
            o["y"] += o["vy"] * dt
            if o["x"] < 0 or o["x"] > W - w:
                o["vx"] = -o["vx"]
                o["x"] = float(np.clip(o["x"], 0, W - w))
            if o["y"] < 0 or o["y"] > H - h:
                o["vy"] = -o["vy"]
                o["y"] = float(np.clip(o["y"], 0, H - h))
    return Sequence_(frames, truth, np.asarray(bottoms, dtype=np.float64))

# ----- detection -----------------------------------------------------------------------------
_DETECTOR: list[Any] = []


def _detector() -> Any:
    """yolo11n on onnxruntime f32, loaded once."""
    if not _DETECTOR:
        from rtc_server.engine.loader import load_detector

        _DETECTOR.append(load_detector(find_model(), backend="onnxruntime", precision="f32"))
    return _DETECTOR[0]


def detect_all(seqs: list[Sequence_], key: str) -> list[list[Detections]]:
    cache = Path(tempfile.gettempdir()) / f"rtc-bench-tracking-{key}.npz"
    if cache.is_file():
        data = np.load(cache)
        out = []
        for s, seq in enumerate(seqs):
            out.append([Detections.of(data[f"b{s}_{f}"], data[f"s{s}_{f}"], data[f"c{s}_{f}"])
                        for f in range(len(seq.frames))])
        print(f"detections from cache {cache}", file=sys.stderr)
        return out
    from rtc_server.engine.yolo import Thresholds

    detector = _detector()
    th = Thresholds(conf=0.1)
    out, arrays = [], {}
    t0 = time.perf_counter()
    for s, seq in enumerate(seqs):
        dets = []
        for f, frame in enumerate(seq.frames):
            r = detector.detect([frame], [th])[0]
            b = np.array([d.box for d in r.detections], dtype=np.float64).reshape(-1, 4)
            sc = np.array([d.score for d in r.detections], dtype=np.float64)
            c = np.array([d.class_id for d in r.detections], dtype=np.int64)
            dets.append(Detections.of(b, sc, c))
            arrays[f"b{s}_{f}"], arrays[f"s{s}_{f}"], arrays[f"c{s}_{f}"] = b, sc, c
        out.append(dets)
    print(f"detected {sum(len(s.frames) for s in seqs)} frames in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    np.savez_compressed(cache, **arrays)
    return out


# ----- trackers --------------------------------------------------------------------------------
def frame_indices(n: int, every: int) -> list[int]:
    return list(range(0, n, every))


def run_ours(dets: list[Detections], idx: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, boxes) of confirmed tracks at each frame of ``idx``."""
    a = StreamAnalytics(class_names=())
    out = []
    for f in idx:
        tr = a.tracker.update(dets[f], f / FPS)
        n = tr.n_detections
        keep = tr.track_ids[:n] >= 0
        out.append((tr.track_ids[:n][keep], tr.boxes[:n][keep]))
    return out


ANCHOR = r"""
import json, sys, time
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker
data = np.load(sys.argv[1])
jobs = json.loads(sys.argv[2])
result = {}
for name, (seq, idx, fps) in jobs.items():
    tr = ByteTrackTracker(frame_rate=30.0)
    frames = []
    for f in idx:
        b, s, c = data[f"b{seq}_{f}"], data[f"s{seq}_{f}"], data[f"c{seq}_{f}"]
        d = sv.Detections(xyxy=b.reshape(-1, 4), confidence=s, class_id=c, data={"i": np.arange(len(s))})
        out = tr.update(d, timestamp=f / fps)
        keep = out.tracker_id >= 0
        frames.append([out.tracker_id[keep].tolist(), out.xyxy[keep].tolist()])
    result[name] = frames
# cost per update at 50 boxes
rng = np.random.default_rng(0)
xs, ys = rng.uniform(0, 1200, 50), rng.uniform(0, 600, 50)
tr = ByteTrackTracker(frame_rate=30.0)
times = []
for k in range(600):
    b = np.stack([xs + k, ys, xs + k + 30, ys + 60], 1)
    d = sv.Detections(xyxy=b, confidence=np.full(50, 0.9), class_id=np.zeros(50, dtype=int))
    t0 = time.perf_counter(); tr.update(d, timestamp=k / 30); times.append(time.perf_counter() - t0)
result["cost_us"] = float(np.median(times[100:]) * 1e6)
print(json.dumps(result))
"""


def run_anchor(python: str, cache: Path, jobs: dict[str, tuple[int, list[int], float]]) -> dict[str, Any] | str:
    if not Path(python).is_file():
        return f"not run: no {python} (see the module docstring)"
    p = subprocess.run([python, "-c", ANCHOR, str(cache), json.dumps(jobs)], capture_output=True, text=True,
                       timeout=900, check=False)
    if p.returncode != 0:
        return f"failed: {p.stderr.strip()[-400:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def line_counts(tracks: list[tuple[np.ndarray, np.ndarray]], idx: list[int]) -> tuple[int, int]:
    """Left/right crossings of the bench's line by these tracks (our line logic for both)."""
    ev = ShapeEvents((), parse_lines(LINE))
    for (ids, boxes), f in zip(tracks, idx, strict=True):
        ev.update(np.asarray(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int64),
                  reference_points(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), W, H), f / FPS, (), {})
    c = ev.counts()["lines"]["middle"]
    return c["left"], c["right"]


def cost_per_message(n_boxes: int = 50, n_frames: int = 1500) -> dict[str, float]:
    """StreamAnalytics.update (tracker + 2 lines + 2 zones) at ``n_boxes`` moving boxes."""
    a = StreamAnalytics(
        lines=parse_lines([{"name": "v", "a": [0.5, 0], "b": [0.5, 1]}, {"name": "h", "a": [0, 0.5], "b": [1, 0.5]}]),
        zones=parse_zones([{"name": "l", "polygon": [[0, 0], [0.4, 0], [0.4, 1], [0, 1]]},
                           {"name": "r", "polygon": [[0.6, 0.2], [1, 0.2], [0.9, 0.9], [0.7, 0.8]]}]),
        class_names=("person",))
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(0, 1200, n_boxes), rng.uniform(0, 600, n_boxes)
    vx, vy = rng.uniform(-3, 3, n_boxes), rng.uniform(-2, 2, n_boxes)
    times = []
    for k in range(n_frames):
        x, y = xs + vx * k, ys + vy * k
        d = Detections.of(np.stack([x, y, x + 30, y + 60], 1), np.full(n_boxes, 0.9), np.zeros(n_boxes))
        t0 = time.perf_counter()
        a.update(d, k / FPS, width=1280, height=720, frame_id=k)
        times.append(time.perf_counter() - t0)
    return summary([v * 1e6 for v in times[100:]])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequences", type=int, default=3)
    ap.add_argument("--frames", type=int, default=240, help="frames per sequence (30 fps)")
    ap.add_argument("--objects", type=int, default=5)
    ap.add_argument("--anchor-python", default=os.environ.get("ANCHOR_PYTHON", "/tmp/venv-trackers/bin/python"))
    args = ap.parse_args(argv)
    load_start = load()
    crops = _crops(np.random.default_rng(0))
    picked = Path(tempfile.gettempdir()) / f"rtc-bench-tracking-crops-{len(crops)}.json"
    if picked.is_file():
        keep = json.loads(picked.read_text())
    else:
        keep = screened_crops(crops, _detector())
        picked.write_text(json.dumps(keep))
    crops = [crops[i] for i in keep]
    print(f"{len(crops)} crops the model finds on their own", file=sys.stderr)
    seqs = [make_sequence(s, args.frames, args.objects, crops) for s in range(args.sequences)]
    key = hashlib.sha256(f"{args.sequences}-{args.frames}-{args.objects}-{keep}-v2".encode()).hexdigest()[:12]
    dets = detect_all(seqs, key)
    cache = Path(tempfile.gettempdir()) / f"rtc-bench-tracking-{key}.npz"
    rates = {"30 fps": 1, "5 fps": SAMPLE_EVERY}
    jobs = {f"{s}/{r}": (s, frame_indices(args.frames, every), FPS)
            for s in range(len(seqs)) for r, every in rates.items()}
    anchor = run_anchor(args.anchor_python, cache, jobs)
    rows, result = [], {"rates": {}}
    for rate, every in rates.items():
        per: dict[str, dict[str, Any]] = {}
        for who in ("ours", "anchor"):
            if who == "anchor" and isinstance(anchor, str):
                continue
            gt_all, hyp_all, counts, truth_counts, found_counts = [], [], [0, 0], [0, 0], [0, 0]
            for s, seq in enumerate(seqs):
                idx = frame_indices(args.frames, every)
                if who == "ours":
                    tracks = run_ours(dets[s], idx)
                else:
                    assert isinstance(anchor, dict)
                    tracks = [(np.asarray(i, dtype=np.int64), np.asarray(b, dtype=np.float64).reshape(-1, 4))
                              for i, b in anchor[f"{s}/{rate}"]]
                # Ids are per sequence: offset them so sequences concatenate into one score.
                gt_all += [FrameTruth(seq.truth[f].ids + 1000 * s, seq.truth[f].boxes) for f in idx]
                hyp_all += [FrameTruth(np.asarray(i) + 100000 * s, b) for i, b in tracks]
                lc = line_counts(tracks, idx)
                counts[0] += lc[0]
                counts[1] += lc[1]
                everywhere = crossings(seq, np.ones(seq.centres.shape, dtype=bool))
                found = crossings(seq, found_by_model(seq, dets[s]))
                truth_counts[0] += everywhere[0]
                truth_counts[1] += everywhere[1]
                found_counts[0] += found[0]
                found_counts[1] += found[1]
            sc = evaluate(gt_all, hyp_all)
            per[who] = {**sc.to_dict(), "line_left": counts[0], "line_right": counts[1],
                        "truth_left": truth_counts[0], "truth_right": truth_counts[1],
                        "found_left": found_counts[0], "found_right": found_counts[1]}
            rows.append([rate, who, sc.mota, sc.idf1, sc.id_switches, sc.false_negatives, sc.false_positives,
                         f"{counts[0]}/{counts[1]}", f"{found_counts[0]}/{found_counts[1]}",
                         f"{truth_counts[0]}/{truth_counts[1]}"])
        result["rates"][rate] = per
    cost = cost_per_message()
    result["cost_us_50_boxes"] = cost
    result["anchor"] = anchor if isinstance(anchor, str) else {"cost_us_50_boxes": anchor["cost_us"]}
    print(table(["rate", "tracker", "MOTA", "IDF1", "ID sw", "FN", "FP", "line L/R", "found L/R", "truth L/R"], rows))
    print(f"\nours, tracker + 2 lines + 2 zones at 50 boxes: p50 {cost['p50']:.0f} us, p95 {cost['p95']:.0f} us"
          + ("" if isinstance(anchor, str) else f"; anchor's ByteTrack alone: p50 {anchor['cost_us']:.0f} us"))
    if isinstance(anchor, str):
        print(f"anchor: {anchor}")
    result["sequences"] = {"count": len(seqs), "frames": args.frames, "objects": args.objects,
                           "gt_boxes": sum(sum(len(t.ids) for t in s.truth) for s in seqs)}
    emit("tracking", result, load_start)


if __name__ == "__main__":
    main()
