"""Tracking metrics: MOTA, ID switches (CLEAR MOT) and IDF1, on per-frame box lists.

Why our own: ``motmetrics`` 1.4.0 breaks on NumPy 2 (``np.asfarray``). These follow the
definitions it implements (Bernardin & Stiefelhagen 2008; Ristani et al. 2016), with a
match meaning IoU >= ``iou`` (0.5, as MOTChallenge):

- **CLEAR MOT**, frame by frame: a ground-truth object keeps last frame's hypothesis if it
  still overlaps; the rest are matched by Hungarian on IoU. A ground-truth object whose
  hypothesis id differs from the one it last had is an **ID switch**.
  ``MOTA = 1 - (FN + FP + IDSW) / GT``.
- **IDF1**: one global one-to-one matching of ground-truth trajectories to hypothesis
  trajectories that maximises the frames where they overlap (IDTP);
  ``IDF1 = 2 IDTP / (GT detections + hypothesis detections)``.

Used by ``bench/tracking.py`` and tested on hand-made cases in ``tests/test_track_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .tracker import iou_matrix

__all__ = ["FrameTruth", "MotScores", "evaluate"]


@dataclass(frozen=True)
class FrameTruth:
    """One frame: ids ``(N,)`` and xyxy boxes ``(N, 4)``; the same type for ground truth
    and for a tracker's output (its confirmed tracks)."""

    ids: np.ndarray
    boxes: np.ndarray

    @staticmethod
    def of(ids: Sequence[int], boxes: Sequence[Sequence[float]]) -> FrameTruth:
        return FrameTruth(np.asarray(ids, dtype=np.int64).reshape(-1),
                          np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


@dataclass(frozen=True)
class MotScores:
    mota: float
    idf1: float
    id_switches: int
    false_negatives: int
    false_positives: int
    ground_truth: int
    idtp: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mota": self.mota, "idf1": self.idf1, "idsw": self.id_switches, "fn": self.false_negatives,
                "fp": self.false_positives, "gt": self.ground_truth, "idtp": self.idtp}


def evaluate(truth: Sequence[FrameTruth], hyp: Sequence[FrameTruth], iou: float = 0.5) -> MotScores:
    """Score ``hyp`` against ``truth``, frame by frame (equal lengths)."""
    if len(truth) != len(hyp):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(hyp)} hypothesis frames")
    last: dict[int, int] = {}          # gt id -> hypothesis id it was last matched to
    fn = fp = idsw = n_gt = n_hyp = 0
    pair_overlap: dict[tuple[int, int], int] = {}
    gt_count: dict[int, int] = {}
    hyp_count: dict[int, int] = {}
    for g, h in zip(truth, hyp, strict=True):
        n_gt += len(g.ids)
        n_hyp += len(h.ids)
        for i in g.ids.tolist():
            gt_count[i] = gt_count.get(i, 0) + 1
        for j in h.ids.tolist():
            hyp_count[j] = hyp_count.get(j, 0) + 1
        ov = iou_matrix(g.boxes, h.boxes)
        ok = ov >= iou
        # IDF1's overlap counts: every gt/hyp pair that overlaps in this frame.
        for a, b in zip(*np.nonzero(ok), strict=True):
            key = (int(g.ids[a]), int(h.ids[b]))
            pair_overlap[key] = pair_overlap.get(key, 0) + 1
        # CLEAR MOT: keep last frame's correspondences that still overlap, then Hungarian.
        matched_g: dict[int, int] = {}
        used_h: set[int] = set()
        h_index = {int(v): k for k, v in enumerate(h.ids.tolist())}
        for a, gid in enumerate(g.ids.tolist()):
            prev = last.get(gid)
            b = h_index.get(prev) if prev is not None else None
            if b is not None and ok[a, b] and b not in used_h:
                matched_g[a] = b
                used_h.add(b)
        free_g = [a for a in range(len(g.ids)) if a not in matched_g]
        free_h = [b for b in range(len(h.ids)) if b not in used_h]
        if free_g and free_h:
            sub = ov[np.ix_(free_g, free_h)]
            cost = np.where(sub >= iou, 1.0 - sub, 2.0)
            rows, cols = linear_sum_assignment(cost)
            for r_, c_ in zip(rows, cols, strict=True):
                if cost[r_, c_] <= 1.0:
                    matched_g[free_g[r_]] = free_h[c_]
        for a, b in matched_g.items():
            gid, hid = int(g.ids[a]), int(h.ids[b])
            if gid in last and last[gid] != hid:
                idsw += 1
            last[gid] = hid
        fn += len(g.ids) - len(matched_g)
        fp += len(h.ids) - len(matched_g)
    idtp = 0
    if pair_overlap:
        gids = sorted(gt_count)
        hids = sorted(hyp_count)
        gi = {v: k for k, v in enumerate(gids)}
        hi = {v: k for k, v in enumerate(hids)}
        w = np.zeros((len(gids), len(hids)))
        for (a, b), n in pair_overlap.items():
            w[gi[a], hi[b]] = n
        rows, cols = linear_sum_assignment(-w)
        idtp = int(w[rows, cols].sum())
    mota = 1.0 - (fn + fp + idsw) / n_gt if n_gt else float("nan")
    denom = n_gt + n_hyp
    idf1 = 2.0 * idtp / denom if denom else float("nan")
    return MotScores(mota, idf1, idsw, fn, fp, n_gt, idtp)
