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

State is one numpy array with a column per live track (``_ROWS`` below); every step is
vectorised over tracks and detections, on contiguous rows. Nothing here does I/O or reads
settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Detections", "Tracker", "TrackerConfig", "Tracks", "iou_matrix"]

_TENTATIVE, _CONFIRMED, _LOST = 0, 1, 2
_EMPTY4 = np.zeros((4, 0), dtype=np.float64)   # no boxes, transposed
_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Detections:
    """One frame's detections: ``boxes`` ``(N, 4)`` xyxy pixels, ``scores`` ``(N,)``,
    ``class_ids`` ``(N,)`` ints. Arrays, not objects, so that 50 boxes cost microseconds."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

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
    """IoU of every box in ``a`` ``(N, 4)`` with every box in ``b`` ``(M, 4)``, xyxy."""
    return _iou(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T))


# Below, boxes are held transposed, ``(4, N)``: x1, y1, x2, y2 rows. A frame runs ~100 numpy
# calls on arrays of ~50 values, so each call's fixed cost is what a frame pays, and an
# operation on a contiguous row costs about a third of the same one on a column of an
# ``(N, 4)`` array (a strided view; measured here: docs/tracking.md).
def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of transposed boxes ``a`` ``(4, N)`` and ``b`` ``(4, M)``.

    Per coordinate on ``(N, M)`` planes, in place where it can: no ``(N, M, 2)``
    intermediates, about 2.5x cheaper at 50x50 than the broadcast-over-pairs version
    (it runs on every frame, ``docs/tracking.md``)."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return np.zeros((a.shape[1], b.shape[1]))
    ax1, ay1, ax2, ay2 = a[0][:, None], a[1][:, None], a[2][:, None], a[3][:, None]
    bx1, by1, bx2, by2 = b
    inter = np.minimum(ax2, bx2)
    inter -= np.maximum(ax1, bx1)
    np.maximum(inter, 0.0, out=inter)
    ih = np.minimum(ay2, by2)
    ih -= np.maximum(ay1, by1)
    np.maximum(ih, 0.0, out=ih)
    inter *= ih
    union = ((ax2 - ax1) * (ay2 - ay1)) + ((bx2 - bx1) * (by2 - by1))
    union -= inter
    np.maximum(union, 1e-12, out=union)  # degenerate boxes: inter is 0 too
    inter /= union
    return inter


def _xyxy_to_z(b: np.ndarray) -> np.ndarray:
    """Transposed xyxy -> (cx, cy, w, h) rows: what the filter measures."""
    z = np.empty(b.shape)
    np.add(b[0:2], b[2:4], out=z[0:2])
    z[0:2] *= 0.5
    np.subtract(b[2:4], b[0:2], out=z[2:4])
    return z


def _z_to_xyxy(z: np.ndarray) -> np.ndarray:
    half = np.maximum(z[2:4], 1e-6)
    half *= 0.5
    b = np.empty(z.shape)
    np.subtract(z[0:2], half, out=b[0:2])
    np.add(z[0:2], half, out=b[2:4])
    return b


def _grown(b: np.ndarray, k: float) -> np.ndarray:
    """Transposed xyxy boxes grown by ``k`` times their width/height on each side."""
    wh = (b[2:4] - b[0:2]) * k
    return np.concatenate([b[0:2] - wh, b[2:4] + wh])


def _assign(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising IoU; pairs below ``min_iou`` are not matches.
    Returns (rows, cols) of the accepted pairs."""
    if iou.size == 0:
        return _NO_ROWS, _NO_ROWS
    candidate = iou >= min_iou
    rows, cols = candidate.nonzero()
    if rows.size == 0:
        return rows, cols
    if (rows.size == 1 or (rows[1:] != rows[:-1]).all()) and np.bincount(cols).max() <= 1:
        # No track competes for a detection, no detection for a track (objects apart: the
        # common frame): every candidate pair is in the optimum, no solver needed. (``rows``
        # come sorted from nonzero: a repeat is a neighbour.)
        return rows, cols
    cost = np.where(candidate, 1.0 - iou, 2.0)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= 1.0
    return rows[ok], cols[ok]


# The state of every live track is one column of one float64 array, ``(30, M)``: one row per
# quantity below, so each quantity is a contiguous row, and a step gathers, scatters, drops
# and appends tracks with one numpy call each.
_POS, _VEL = slice(0, 4), slice(4, 8)    # Kalman mean: cx, cy, w, h and their velocities (per second)
_PP, _PV, _VV = slice(8, 12), slice(12, 16), slice(16, 20)   # covariance blocks per coordinate
_MEAN, _PP_PV = slice(0, 8), slice(8, 16)
_ID, _CLS, _STATUS, _HITS, _SEEN, _SCORE = 20, 21, 22, 23, 24, 25   # ids are exact in float64
_OBS = slice(26, 30)         # last observed box, transposed xyxy
_ROWS = 30


class Tracker:
    """One stream's tracker. ``update(detections, t)`` once per processed frame, ``t`` the
    frame's own time in seconds (its pts), non-decreasing. Not thread-safe: a stream owns one."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._x = np.zeros((_ROWS, 0))   # one column per live track, rows as above
        self._next_id = 1
        self._t: float | None = None
        c = self.config
        # Kalman constants, folded once: process noise per second of dt as a fraction of h^2
        # (velocity is per second), measurement noise, and a new track's initial variances.
        self._q_pos = c.std_position ** 2 * c.ref_rate
        self._q_vel = (c.std_velocity * c.ref_rate) ** 2 * c.ref_rate
        self._r = c.std_position ** 2
        self._p0_pos = (2 * c.std_position) ** 2
        self._p0_vel = (10 * c.std_velocity * c.ref_rate) ** 2

    def __len__(self) -> int:
        """Live tracks (tentative, confirmed and coasting): bounded by recent detections."""
        return int(self._x.shape[1])

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
    def _predict(self, dt: float) -> None:
        """Advance every track by ``dt`` seconds. The process noise is a random walk: it
        grows with the time elapsed, not with the number of frames."""
        x = self._x
        if x.shape[1] == 0 or dt <= 0:
            return
        x[_POS] += dt * x[_VEL]
        vv = x[_VV]
        h2 = x[3] * x[3]   # squared: no abs needed
        x[_PP] += (2.0 * dt) * x[_PV] + (dt * dt) * vv + (self._q_pos * dt) * h2
        x[_PV] += dt * vv
        vv += (self._q_vel * dt) * h2

    def _observe(self, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray,
                 t: float) -> np.ndarray:
        """Kalman update of the tracks ``rows`` with their detections' ``boxes`` (transposed
        xyxy), and the rest of an observation: last box, hits, time seen, score, class, and
        lost -> confirmed. Returns the updated columns (a copy)."""
        x = self._x.take(rows, axis=1)   # C-contiguous: the reshapes below are views
        k = x.shape[1]
        z = _xyxy_to_z(boxes)
        p = x[_PP_PV].reshape(2, 4, k)                        # pp, pv
        gain = p / (p[0] + (z[3] * z[3]) * self._r)          # (kp, kv); noise (std * h)^2
        x[_MEAN].reshape(2, 4, k)[...] += gain * (z - x[_POS])
        x[_VV] -= gain[1] * p[1]
        p *= 1.0 - gain[0]                                    # pp, pv *= 1 - kp
        x[_OBS] = boxes
        x[_HITS] += 1.0
        x[_SEEN] = t
        x[_SCORE] = scores
        x[_CLS] = cls
        np.minimum(x[_STATUS], _CONFIRMED, out=x[_STATUS])   # lost -> confirmed
        self._x[:, rows] = x
        return x

    def _new(self, boxes: np.ndarray, cls: np.ndarray, scores: np.ndarray, t: float) -> np.ndarray:
        """Columns of tentative tracks for unmatched ``boxes`` (transposed xyxy)."""
        x = np.zeros((_ROWS, boxes.shape[1]))
        z = _xyxy_to_z(boxes)
        x[_POS] = z
        h2 = z[3] * z[3]
        x[_PP] = self._p0_pos * h2
        x[_VV] = self._p0_vel * h2
        x[_ID] = -1.0
        x[_CLS] = cls
        x[_STATUS] = _TENTATIVE
        x[_HITS] = 1.0
        x[_SEEN] = t
        x[_SCORE] = scores
        x[_OBS] = _z_to_xyxy(z)
        return x

    # ----- one frame ---------------------------------------------------------------------
    def update(self, dets: Detections, t: float) -> Tracks:
        """Advance to time ``t`` (seconds) and associate this frame's detections."""
        c = self.config
        dt = 0.0 if self._t is None else min(max(t - self._t, 0.0), c.max_dt)
        self._t = t if self._t is None else max(self._t, t)
        self._predict(dt)
        x = self._x

        n = len(dets)
        det_track = np.empty(n, dtype=np.int64)   # column of the track each detection joined
        det_track.fill(-1)
        boxes, scores, cls = dets.boxes, dets.scores, dets.class_ids
        bt = np.ascontiguousarray(boxes.T)
        is_high = scores >= c.high_score
        high = is_high.nonzero()[0]
        m = x.shape[1]
        matched = np.zeros(m, dtype=bool)
        status = x[_STATUS]
        tboxes = _z_to_xyxy(x[_POS]) if m else _EMPTY4
        # Tentative tracks (one observation, no velocity yet) were all last seen in the
        # previous frame: grow their boxes and the detections' by the same factor of their
        # size, by how long the gap was (buffered IoU), so a fast object at 2 detections/s
        # still overlaps its first sighting.
        grow = c.buffer * min(max(dt * c.ref_rate, 1.0), c.max_buffer)

        def stage(track_rows: np.ndarray, det_rows: np.ndarray, min_iou: float, buffered: bool,
                  observed: bool = False) -> None:
            if track_rows.size == 0 or det_rows.size == 0:
                return
            every_track, every_det = track_rows.size == m, det_rows.size == n   # no gather needed
            tb = x[_OBS] if observed else tboxes
            if not every_track:
                tb = tb.take(track_rows, axis=1)
            db = bt if every_det else bt.take(det_rows, axis=1)
            if buffered:
                tb, db = _grown(tb, grow), _grown(db, grow)
            iou = _iou(tb, db)
            if c.class_penalty > 0.0:
                ct = x[_CLS] if every_track else x[_CLS, track_rows]
                cd = cls if every_det else cls[det_rows]
                one = ct[0]
                if (ct != one).any() or (cd != one).any():   # skipped where all are one class
                    differ = ct[:, None] != cd
                    if c.class_penalty >= 1.0:
                        iou[differ] = 0.0
                    else:
                        iou -= c.class_penalty * differ
            r, k = _assign(iou, min_iou)
            tr, dr = track_rows[r], det_rows[k]
            matched[tr] = True
            det_track[dr] = tr

        active = (status != _TENTATIVE).nonzero()[0] if m else _NO_ROWS
        stage(active, high, c.match_iou, False)
        free_high = high[det_track[high] < 0] if m else high
        if c.recover_iou < 1.0 and free_high.size and m:
            stage(active[~matched[active]], free_high, c.recover_iou, True, observed=True)
            free_high = free_high[det_track[free_high] < 0]
        if free_high.size and m:
            stage((status == _TENTATIVE).nonzero()[0], free_high, c.tentative_match_iou, True)
        # Low-score detections extend every track still unmatched: confirmed, lost (an object
        # coming out of occlusion is rarely detected confidently at first) and tentative
        # (an object the detector is unsure of is still one object). The paper extends only
        # tracked ones; on the bench this cut misses by a third (docs/tracking.md).
        all_matched = bool(matched.all())
        if not all_matched:
            low = (~is_high & (scores >= c.low_score)).nonzero()[0]
            if low.size:
                stage((~matched).nonzero()[0], low, c.low_match_iou, False)
                all_matched = bool(matched.all())

        # Kalman update of every matched track; hits, status, ids.
        joined = det_track >= 0
        di = joined.nonzero()[0]
        rows = det_track[di]
        out_ids = np.empty(n, dtype=np.int64)
        out_ids.fill(-1)
        if rows.size:
            every = di.size == n
            seen = self._observe(rows, bt if every else bt.take(di, axis=1), scores if every else scores[di],
                                 cls if every else cls[di], t)
            promote = ((seen[_STATUS] == _TENTATIVE) & (seen[_HITS] >= c.min_hits)).nonzero()[0]
            if promote.size:
                ids = np.arange(self._next_id, self._next_id + promote.size)
                self._next_id += int(promote.size)
                seen[_ID, promote] = ids
                promote = rows[promote]
                status[promote] = _CONFIRMED
                x[_ID, promote] = ids
            out_ids[di] = seen[_ID]   # before the state is compacted

        # Unmatched: tentative ones die, confirmed ones get lost, lost ones past budget expire.
        removed: tuple[int, ...] = ()
        dead = None
        pred = None
        if not all_matched:
            unmatched = ~matched
            status[unmatched & (status == _CONFIRMED)] = _LOST
            dead = unmatched & ((status == _TENTATIVE) | ((status == _LOST) & (t - x[_SEEN] > c.max_lost_s)))
            if dead.any():
                removed_ids = x[_ID, dead]
                removed = tuple(int(v) for v in removed_ids[removed_ids >= 0])
            else:
                dead = None
            if c.predict_s > 0:
                show = (status == _LOST) & (t - x[_SEEN] <= c.predict_s)
                if dead is not None:
                    show &= ~dead
                if show.any():
                    pred = x.compress(show, axis=1)   # a copy, taken before the columns are dropped
            if dead is not None:
                x = self._x = x.compress(~dead, axis=1)
        new = ((~joined) & (scores >= c.new_track_score)).nonzero()[0]
        if new.size:
            fresh = self._new(bt.take(new, axis=1), cls[new], scores[new], t)
            if c.min_hits <= 1:  # confirmed on sight
                fresh[_STATUS] = _CONFIRMED
                fresh[_ID] = np.arange(self._next_id, self._next_id + new.size)
                self._next_id += int(new.size)
                out_ids[new] = fresh[_ID]
            self._x = np.concatenate([x, fresh], axis=1)

        if pred is not None:
            k = pred.shape[1]
            return Tracks(np.concatenate([boxes, _z_to_xyxy(pred[_POS]).T]),
                          np.concatenate([scores, pred[_SCORE]]),
                          np.concatenate([cls, pred[_CLS].astype(np.int64)]),
                          np.concatenate([out_ids, pred[_ID].astype(np.int64)]),
                          np.concatenate([np.zeros(n, dtype=bool), np.ones(k, dtype=bool)]),
                          n, removed)
        return Tracks(boxes, scores, cls, out_ids, np.zeros(n, dtype=bool), n, removed)
