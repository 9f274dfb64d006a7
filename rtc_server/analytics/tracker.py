"""ByteTrack over numpy: identities across frames, advanced by each frame's own time.

Why our own and not Roboflow's ``trackers``: ``docs/tracking.md`` (it pulls in non-headless
OpenCV, supervision and matplotlib, ~550 MB beyond what the server installs; this is one
module on numpy + scipy, level with it or better on the server runs of ``bench/tracking.py``).

The algorithm is ByteTrack's (Zhang et al., 2022) two-stage association:

1. every track (confirmed, and lost ones still coasting) is predicted to the frame's time;
2. high-score detections are matched to confirmed and lost tracks by IoU (Hungarian);
3. remaining high-score detections are matched to tentative tracks;
4. low-score detections (kept by the detector, usually dropped) are matched to the tracks
   still unmatched — they hold identities through occlusion and blur. Unmatched high-score
   detections start new tentative tracks; a tentative track that misses a frame is dropped.

What differs from the paper, and why:

- **Time, not frame count.** The Kalman filter's transition and process noise use ``dt``
  seconds between frames, and lost tracks coast for ``max_lost_s`` seconds. A stream that
  gets 30, 5 or 2 detections/s (the scheduler's fair share) keeps its identities.
- **Class-aware, softly.** A detection of another class than the track's needs ``class_penalty``
  more IoU to continue it: same-class matches win, but the detector's class flicker on one
  object (dog/cat, car/truck) does not fork its identity (measured: hard class gating gave
  3x the ID switches on the bench's sequences, ``docs/tracking.md``).
- **Buffered IoU for the first match of a track.** A tentative track (one observation, no
  velocity yet) cannot predict where a fast object went at 2 detections/s; its box and the
  detections are grown by ``buffer`` times their size per ``1/ref_rate`` seconds of gap
  before the IoU (C-BIoU, Yang et al. 2023), so a 6x sampling gap does not fork identities.
- **Recovery by the last observation** (OC-SORT's OCR, Cao et al. 2023), between the
  first stage and the tentative one: a track the prediction lost (an object that turned,
  bounced or stopped: its velocity carried the prediction away) is matched by the box it
  was last *seen* at, buffered as above, to the high-score detections still free, instead of
  forking a new id. Measured on the bench's sequences (``docs/tracking.md``): ID switches
  44 -> 18 at 5 detections/s, 58 -> 24 at 2, 13 -> 11 at full rate; IDF1 0.67 -> 0.89 at 5.
- Ids are integers from 1, unique within the tracker and never reused; a track has none
  (``None`` in the output) until it is confirmed after ``min_hits`` hits.

State is a handful of numpy arrays (one row per live track); every step is vectorised
over tracks and detections. Nothing here does I/O or reads settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Detections", "Tracker", "TrackerConfig", "Tracks", "iou_matrix"]

_TENTATIVE, _CONFIRMED, _LOST = 0, 1, 2
_EMPTY4 = np.zeros((0, 4), dtype=np.float64)


@dataclass(frozen=True)
class Detections:
    """One frame's detections: ``boxes`` ``(N, 4)`` xyxy pixels, ``scores`` ``(N,)``,
    ``class_ids`` ``(N,)`` ints. Arrays, not objects, so that 50 boxes cost microseconds."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(_EMPTY4, np.zeros(0), np.zeros(0, dtype=np.int64))

    @staticmethod
    def of(boxes: object, scores: object, class_ids: object) -> Detections:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return Detections(b, np.asarray(scores, dtype=np.float64).reshape(-1),
                          np.asarray(class_ids, dtype=np.int64).reshape(-1))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class Tracks:
    """What a frame yields. Rows ``[:n_detections]`` are the input detections in their input
    order (``track_ids`` -1 where not confirmed yet); rows after them are boxes predicted for
    confirmed tracks missed in this frame (``predicted`` True), if the tracker emits them.
    ``removed`` are the ids that expired in this step (consumers drop their state for them)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray
    predicted: np.ndarray
    n_detections: int
    removed: tuple[int, ...] = ()

    def track_id(self, i: int) -> int | None:
        """The wire value of row ``i``'s id: an int, or None for a tentative track."""
        v = int(self.track_ids[i])
        return v if v >= 0 else None


@dataclass(frozen=True)
class TrackerConfig:
    """Tuning; the defaults are ByteTrack's, expressed in seconds where it counts frames."""

    #: Detections at or above this score are matched first and may start tracks.
    high_score: float = 0.5
    #: Detections below this are ignored; between this and ``high_score`` they only extend tracks.
    low_score: float = 0.1
    #: A new track starts only from an unmatched detection at or above this score.
    new_track_score: float = 0.7
    #: IoU a match needs: first stage, second (low-score) stage, tentative tracks.
    match_iou: float = 0.1
    #: Observation-centric recovery (OC-SORT): a confirmed or lost track still unmatched is
    #: matched by its *last observed* box, buffered like a tentative track's, to the
    #: high-score detections left, at this IoU (1: off). An object that turned or stopped is
    #: near where it was seen, not where its old velocity carried the prediction.
    recover_iou: float = 0.3
    low_match_iou: float = 0.3
    tentative_match_iou: float = 0.3
    #: Class-aware matching: a detection of another class than the track's matches only with
    #: IoU this much higher (1: never). The detector's class flickers between similar classes
    #: (dog/cat, car/truck) on the same object; a hard rule forks its identity each time.
    class_penalty: float = 0.3
    #: Hits before a track is confirmed and gets an id.
    min_hits: int = 2
    #: Seconds a confirmed track that is not seen coasts before it expires.
    max_lost_s: float = 1.0
    #: Emit predicted boxes for confirmed tracks missed in this frame, for this many seconds.
    predict_s: float = 0.0
    #: Buffered IoU: a tentative track (no velocity yet) and the detections it may match
    #: grow by this fraction of their size per ``1 / ref_rate`` seconds of gap.
    buffer: float = 0.3
    ref_rate: float = 30.0
    #: The buffer grows for at most this many ``1 / ref_rate`` steps, however long the gap.
    max_buffer: float = 8.0
    #: Kalman noise, as fractions of the box height (ByteTrack's), per ``1/ref_rate`` s.
    std_position: float = 1.0 / 20
    std_velocity: float = 1.0 / 160
    #: Largest dt the filter takes in one step (a stream that stalls does not fling boxes).
    max_dt: float = 2.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``(N, 4)`` with every box in ``b`` ``(M, 4)``, xyxy.

    Per coordinate on ``(N, M)`` planes, in place where it can: no ``(N, M, 2)``
    intermediates, about 2.5x cheaper at 50x50 than the broadcast-over-pairs version
    (it runs on every frame, ``docs/tracking.md``)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 2:3], a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    inter = np.minimum(ax2, bx2)
    inter -= np.maximum(ax1, bx1)
    np.maximum(inter, 0.0, out=inter)
    ih = np.minimum(ay2, by2)
    ih -= np.maximum(ay1, by1)
    np.maximum(ih, 0.0, out=ih)
    inter *= ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)
    union -= inter
    np.maximum(union, 1e-12, out=union)  # degenerate boxes: inter is 0 too
    inter /= union
    return inter


def _xyxy_to_z(b: np.ndarray) -> np.ndarray:
    """xyxy -> (cx, cy, w, h): what the filter measures."""
    return np.concatenate([(b[:, :2] + b[:, 2:]) * 0.5, b[:, 2:] - b[:, :2]], axis=1)


def _z_to_xyxy(z: np.ndarray) -> np.ndarray:
    half = np.maximum(z[:, 2:4], 1e-6) * 0.5
    return np.concatenate([z[:, :2] - half, z[:, :2] + half], axis=1)


def _grown(b: np.ndarray, k: float) -> np.ndarray:
    """xyxy boxes grown by ``k`` times their width/height on each side."""
    wh = (b[:, 2:] - b[:, :2]) * k
    return np.concatenate([b[:, :2] - wh, b[:, 2:] + wh], axis=1)


def _assign(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising IoU; pairs below ``min_iou`` are not matches.
    Returns (rows, cols) of the accepted pairs."""
    if iou.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e
    candidate = iou >= min_iou
    if candidate.sum(axis=1).max() <= 1 and candidate.sum(axis=0).max() <= 1:
        # No track competes for a detection, no detection for a track (objects apart: the
        # common frame): every candidate pair is in the optimum, no solver needed.
        rows, cols = np.nonzero(candidate)
        return rows, cols
    cost = np.where(candidate, 1.0 - iou, 2.0)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= 1.0
    return rows[ok], cols[ok]


@dataclass
class _State:
    """All live tracks, one row each."""

    mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 3)))  # pp, pv, vv per coordinate
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # -1: tentative
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_seen: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obs: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # last observed box, xyxy

    def keep(self, mask: np.ndarray) -> None:
        for name in ("mean", "cov", "ids", "cls", "status", "hits", "last_seen", "score", "obs"):
            setattr(self, name, getattr(self, name)[mask])

    def append(self, other: _State) -> None:
        for name in ("mean", "cov", "ids", "cls", "status", "hits", "last_seen", "score", "obs"):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))


class Tracker:
    """One stream's tracker. ``update(detections, t)`` once per processed frame, ``t`` the
    frame's own time in seconds (its pts), non-decreasing. Not thread-safe: a stream owns one."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._s = _State()
        self._next_id = 1
        self._t: float | None = None

    def __len__(self) -> int:
        """Live tracks (tentative, confirmed and coasting): bounded by recent detections."""
        return int(self._s.ids.shape[0])

    @property
    def next_id(self) -> int:
        return self._next_id

    # ----- Kalman filter, batched over tracks ---------------------------------------------
    # The state is (cx, cy, w, h) and their velocities. Transition, process noise, the
    # measurement (the four coordinates) and its noise are all separable per coordinate, so
    # the 8x8 covariance is four independent 2x2 (position, velocity) blocks. Keeping just
    # those three numbers per coordinate (pp, pv, vv) makes predict and update a few
    # element-wise operations, with no 8x8 matrix products or solves: the same filter,
    # about ten times cheaper at 50 tracks.
    def _noise(self, h: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-track variance added to position and velocity over ``dt`` seconds (a random
        walk: it grows with the time elapsed, not with the number of frames)."""
        c = self.config
        k = max(dt, 0.0) * c.ref_rate
        h2 = h * h
        # (std * h)^2 * k, with the constants folded (velocity is per second)
        return h2 * (c.std_position ** 2 * k), h2 * ((c.std_velocity * c.ref_rate) ** 2 * k)

    def _predict(self, dt: float) -> None:
        s = self._s
        if s.mean.shape[0] == 0 or dt <= 0:
            return
        s.mean[:, :4] += dt * s.mean[:, 4:]
        pp, pv, vv = s.cov[:, :, 0], s.cov[:, :, 1], s.cov[:, :, 2]
        qp, qv = self._noise(s.mean[:, 3], dt)   # squared inside: no abs needed
        pp += (2.0 * dt) * pv + (dt * dt) * vv + qp[:, None]
        pv += dt * vv
        vv += qv[:, None]

    def _update(self, rows: np.ndarray, z: np.ndarray) -> None:
        """Kalman update of ``rows`` with measurements ``z`` ``(k, 4)``."""
        if rows.size == 0:
            return
        s = self._s
        mean, cov = s.mean[rows], s.cov[rows]
        pp, pv, vv = cov[:, :, 0], cov[:, :, 1], cov[:, :, 2]
        r = z[:, 3] * z[:, 3] * self.config.std_position ** 2     # measurement noise
        sinv = 1.0 / (pp + r[:, None])
        kp, kv = pp * sinv, pv * sinv
        innov = z - mean[:, :4]
        mean[:, :4] += kp * innov
        mean[:, 4:] += kv * innov
        cov[:, :, 2] = vv - kv * pv
        cov[:, :, 1] = (1.0 - kp) * pv
        cov[:, :, 0] = (1.0 - kp) * pp
        s.mean[rows], s.cov[rows] = mean, cov

    def _new(self, z: np.ndarray, cls: np.ndarray, scores: np.ndarray, t: float) -> _State:
        k = z.shape[0]
        mean = np.zeros((k, 8))
        mean[:, :4] = z
        h = np.abs(z[:, 3])
        c = self.config
        cov = np.zeros((k, 4, 3))
        cov[:, :, 0] = ((2 * c.std_position * h) ** 2)[:, None]
        cov[:, :, 2] = ((10 * c.std_velocity * c.ref_rate * h) ** 2)[:, None]
        return _State(mean, cov, np.full(k, -1, dtype=np.int64), cls.copy(),
                      np.full(k, _TENTATIVE, dtype=np.int64), np.ones(k, dtype=np.int64),
                      np.full(k, t), scores.copy(), _z_to_xyxy(z))

    # ----- one frame ---------------------------------------------------------------------
    def update(self, dets: Detections, t: float) -> Tracks:
        """Advance to time ``t`` (seconds) and associate this frame's detections."""
        c = self.config
        dt = 0.0 if self._t is None else min(max(t - self._t, 0.0), c.max_dt)
        self._t = t if self._t is None else max(self._t, t)
        s = self._s
        self._predict(dt)

        n = len(dets)
        det_track = np.full(n, -1, dtype=np.int64)   # row of the track each detection joined
        boxes, scores, cls = dets.boxes, dets.scores, dets.class_ids
        high = np.flatnonzero(scores >= c.high_score)
        low = np.flatnonzero((scores >= c.low_score) & (scores < c.high_score))
        m = s.mean.shape[0]
        matched = np.zeros(m, dtype=bool)
        tboxes = _z_to_xyxy(s.mean[:, :4]) if m else _EMPTY4
        # Tentative tracks (one observation, no velocity yet) were all last seen in the
        # previous frame: grow their boxes and the detections' by the same factor of their
        # size, by how long the gap was (buffered IoU), so a fast object at 2 detections/s
        # still overlaps its first sighting.
        grow = c.buffer * min(max(dt * c.ref_rate, 1.0), c.max_buffer)
        def stage(track_rows: np.ndarray, det_rows: np.ndarray, min_iou: float, buffered: bool,
                  observed: bool = False) -> None:
            if track_rows.size == 0 or det_rows.size == 0:
                return
            tb, db = (s.obs if observed else tboxes)[track_rows], boxes[det_rows]
            if buffered:
                tb, db = _grown(tb, grow), _grown(db, grow)
            iou = iou_matrix(tb, db)
            ct, cd = s.cls[track_rows], cls[det_rows]
            if c.class_penalty > 0.0 and (ct.min() != ct.max() or cd.min() != cd.max() or ct[0] != cd[0]):
                differ = ct[:, None] != cd[None, :]   # skipped where all are one class
                if c.class_penalty >= 1.0:
                    iou[differ] = 0.0
                else:
                    iou -= c.class_penalty * differ
            r, k = _assign(iou, min_iou)
            tr, dr = track_rows[r], det_rows[k]
            matched[tr] = True
            det_track[dr] = tr

        active = np.flatnonzero(s.status != _TENTATIVE)
        stage(active, high, c.match_iou, False)
        free_high = high[det_track[high] < 0]
        if c.recover_iou < 1.0 and free_high.size:
            stage(active[~matched[active]], free_high, c.recover_iou, True, observed=True)
            free_high = free_high[det_track[free_high] < 0]
        tentative = np.flatnonzero(s.status == _TENTATIVE)
        stage(tentative, free_high, c.tentative_match_iou, True)
        # Low-score detections extend every track still unmatched: confirmed, lost (an object
        # coming out of occlusion is rarely detected confidently at first) and tentative
        # (an object the detector is unsure of is still one object). The paper extends only
        # tracked ones; on the bench this cut misses by a third (docs/tracking.md).
        stage(np.flatnonzero(~matched), low, c.low_match_iou, False)

        # Kalman update of every matched track; hits, status, ids.
        di = np.flatnonzero(det_track >= 0)
        rows = det_track[di]
        if rows.size:
            self._update(rows, _xyxy_to_z(boxes[di]))
            s.obs[rows] = boxes[di]
            s.hits[rows] += 1
            s.last_seen[rows] = t
            s.score[rows] = scores[di]
            s.cls[rows] = cls[di]
            s.status[rows] = np.where(s.status[rows] == _LOST, _CONFIRMED, s.status[rows])
            promote = rows[(s.status[rows] == _TENTATIVE) & (s.hits[rows] >= c.min_hits)]
            if promote.size:
                s.status[promote] = _CONFIRMED
                s.ids[promote] = np.arange(self._next_id, self._next_id + promote.size)
                self._next_id += int(promote.size)

        # Unmatched: tentative ones die, confirmed ones get lost, lost ones past budget expire.
        unmatched = ~matched
        s.status[unmatched & (s.status == _CONFIRMED)] = _LOST
        dead = unmatched & ((s.status == _TENTATIVE) | ((s.status == _LOST) & (t - s.last_seen > c.max_lost_s)))
        removed_ids = s.ids[dead & (s.ids >= 0)]
        removed = tuple(int(v) for v in removed_ids) if removed_ids.size else ()

        # Rows of this frame's detections, before the state is compacted.
        out_ids = np.where(det_track >= 0, s.ids[np.maximum(det_track, 0)] if m else -1, -1)
        pred_rows = np.flatnonzero((s.status == _LOST) & ~dead & (t - s.last_seen <= c.predict_s)) \
            if c.predict_s > 0 else None
        if pred_rows is not None and pred_rows.size:
            pred_boxes = _z_to_xyxy(s.mean[pred_rows, :4])
            pred_scores, pred_cls, pred_ids = s.score[pred_rows], s.cls[pred_rows], s.ids[pred_rows]

        if dead.any():
            s.keep(~dead)
        new = np.flatnonzero((det_track < 0) & (scores >= c.new_track_score))
        if new.size:
            s.append(self._new(_xyxy_to_z(boxes[new]), cls[new], scores[new], t))
            if c.min_hits <= 1:  # confirmed on sight
                start = s.ids.shape[0] - new.size
                s.status[start:] = _CONFIRMED
                s.ids[start:] = np.arange(self._next_id, self._next_id + new.size)
                self._next_id += int(new.size)
                out_ids[new] = s.ids[start:]

        if pred_rows is not None and pred_rows.size:
            return Tracks(np.concatenate([boxes, pred_boxes]), np.concatenate([scores, pred_scores]),
                          np.concatenate([cls, pred_cls]), np.concatenate([out_ids, pred_ids]),
                          np.concatenate([np.zeros(n, dtype=bool), np.ones(pred_rows.size, dtype=bool)]),
                          n, removed)
        return Tracks(boxes, scores, cls, out_ids, np.zeros(n, dtype=bool), n, removed)
