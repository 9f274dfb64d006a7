"""Line crossings and zone entries/exits of confirmed tracks, with running counts.

The point of a track that crosses lines and sits in zones is the **bottom centre** of its
box: where a person's feet or a car's wheels meet the ground. Lines and zones are drawn
on the ground in a camera view (a doorway, a lane), and the bottom centre crosses a floor
line when the object does; the box centre would cross it early for tall objects seen from
above, and a head-high box edge would "enter" a floor zone the object never stood in.

Only observed positions count: a box predicted for a track missed in this frame moves no
one across anything. A change of side or of inside/outside counts once, and only after
the track has stayed on the new side for ``min_side_s`` seconds of frame time (hysteresis):
a box that flickers on a line counts nothing, and one that crosses and stays counts once,
at 30 or at 2 detections/s. State is a few numpy arrays with one row per track (rows kept
in id order, since new ids are always larger); tracks that expire are dropped with their
state, so memory follows the live tracks, not the stream's age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import Line, Zone, edges_of

__all__ = ["ShapeEvents", "reference_points"]

_NAN = float("nan")


def reference_points(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Bottom centre of xyxy pixel ``boxes``, normalised to 0-1 of the frame."""
    out = np.empty((boxes.shape[0], 2))
    b = boxes.T
    np.multiply(b[0] + b[2], 0.5 / width, out=out[:, 0])
    np.divide(b[3], height, out=out[:, 1])
    return out


@dataclass
class _Rows:
    """Per-track state, one row per track id (ascending)."""

    n_lines: int
    n_zones: int
    ids: np.ndarray = field(init=False)
    cls: np.ndarray = field(init=False)
    point: np.ndarray = field(init=False)      # last observed reference point
    last_t: np.ndarray = field(init=False)     # time of that observation
    side: np.ndarray = field(init=False)       # (N, L) settled side, 0 = not seen yet
    cand: np.ndarray = field(init=False)       # (N, L) side being tried, 0 = none
    cand_t: np.ndarray = field(init=False)     # (N, L) since when
    cand_ok: np.ndarray = field(init=False)    # (N, L) the move crossed the segment itself
    inside: np.ndarray = field(init=False)     # (N, Z) settled inside
    zcand_t: np.ndarray = field(init=False)    # (N, Z) since when the other state holds, nan = none
    entered: np.ndarray = field(init=False)    # (N, Z) time of entering

    def __post_init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.cls = np.zeros(0, dtype=np.int64)
        self.point = np.zeros((0, 2))
        self.last_t = np.zeros(0)
        self.side = np.zeros((0, self.n_lines), dtype=np.int8)
        self.cand = np.zeros((0, self.n_lines), dtype=np.int8)
        self.cand_t = np.zeros((0, self.n_lines))
        self.cand_ok = np.zeros((0, self.n_lines), dtype=bool)
        self.inside = np.zeros((0, self.n_zones), dtype=bool)
        self.zcand_t = np.zeros((0, self.n_zones))
        self.entered = np.zeros((0, self.n_zones))

    _FIELDS = ("ids", "cls", "point", "last_t", "side", "cand", "cand_t", "cand_ok", "inside", "zcand_t", "entered")

    def keep(self, rows: np.ndarray) -> None:
        """Keep (and order) the rows that ``rows`` (a mask or indices) selects."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[rows])

    def add(self, ids: np.ndarray, cls: np.ndarray, point: np.ndarray, t: float) -> None:
        k = ids.shape[0]
        new = {"ids": ids, "cls": cls, "point": point, "last_t": np.full(k, t),
               "side": np.zeros((k, self.n_lines), dtype=np.int8), "cand": np.zeros((k, self.n_lines), dtype=np.int8),
               "cand_t": np.zeros((k, self.n_lines)), "cand_ok": np.zeros((k, self.n_lines), dtype=bool),
               "inside": np.zeros((k, self.n_zones), dtype=bool), "zcand_t": np.full((k, self.n_zones), _NAN),
               "entered": np.zeros((k, self.n_zones))}
        for name in self._FIELDS:
            setattr(self, name, np.concatenate([getattr(self, name), new[name]]))
        if k and self.ids.shape[0] > k and ids.min() < self.ids[-k - 1]:
            # An older id seen here for the first time (shapes replaced while it was lost):
            # restore id order, which lookups rely on.
            self.keep(np.argsort(self.ids, kind="stable"))


class ShapeEvents:
    """Events and counts for one stream's lines and zones, fed with confirmed tracks."""

    def __init__(self, zones: Sequence[Zone] = (), lines: Sequence[Line] = (), *,
                 class_names: Sequence[str] = (), min_side_s: float = 0.25) -> None:
        self.zones = tuple(zones)
        self.lines = tuple(lines)
        self.class_names = tuple(class_names)
        self.min_side_s = float(min_side_s)
        self._a = np.array([ln.a for ln in self.lines], dtype=np.float64).reshape(-1, 2)
        self._d = np.array([ln.b for ln in self.lines], dtype=np.float64).reshape(-1, 2) - self._a
        # Per line, as contiguous rows: a's x and y, and b - a's (what the side test needs).
        self._ax, self._ay = self._a[:, 0].copy(), self._a[:, 1].copy()
        self._dx, self._dy = self._d[:, 0].copy(), self._d[:, 1].copy()
        edges = [edges_of(z.polygon) for z in self.zones]
        x1, y1, dx, inv_dy, y2 = np.concatenate(edges, axis=1) if edges else np.zeros((5, 0))
        # Ray casting per edge: the x where the edge meets a point's height, as y * slope + x0.
        self._edge_y1, self._edge_y2 = y1.copy(), y2.copy()
        self._edge_slope = dx * inv_dy
        self._edge_x0 = x1 - y1 * self._edge_slope
        self._edge_starts = np.cumsum([0] + [e.shape[1] for e in edges[:-1]]).astype(np.intp)
        self._rows = _Rows(len(self.lines), len(self.zones))
        self._line_counts: list[dict[str, Any]] = [{"left": 0, "right": 0, "by_class": {}} for _ in self.lines]
        self._zone_entered = [0] * len(self.zones)
        self._counts: dict[str, Any] | None = None

    def __len__(self) -> int:
        """Tracks with state here (bounded by the tracker's live tracks)."""
        return int(self._rows.ids.shape[0])

    @property
    def empty(self) -> bool:
        return not self.lines and not self.zones

    def label(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)

    def _applies(self, shapes: Sequence[Line | Zone], cls: np.ndarray) -> np.ndarray | bool:
        """``(N, S)``: which shape counts which track, by its ``classes`` (True: all of them)."""
        if all(shape.classes is None for shape in shapes):
            return True
        out = np.ones((cls.shape[0], len(shapes)), dtype=bool)
        for j, shape in enumerate(shapes):
            if shape.classes is not None:
                out[:, j] = np.isin(cls, list(shape.classes))
        return out

    def counts(self) -> dict[str, Any]:
        """Running counts: per line left/right (and by class), per zone inside now/entered.

        Counts change only with an event, so the same dict is returned until one happens
        (read it, do not change it: a message that still holds it keeps its values, since a
        change builds a new one)."""
        if self._counts is None:
            self._counts = self._build_counts()
        return self._counts

    def _build_counts(self) -> dict[str, Any]:
        inside = self._rows.inside.sum(axis=0) if self.zones else ()
        return {
            "lines": {ln.name: {"left": c["left"], "right": c["right"],
                                "by_class": {k: dict(v) for k, v in c["by_class"].items()}}
                      for ln, c in zip(self.lines, self._line_counts, strict=True)},
            "zones": {z.name: {"inside": int(inside[j]), "entered": self._zone_entered[j]}
                      for j, z in enumerate(self.zones)},
        }

    def update(self, track_ids: np.ndarray, class_ids: np.ndarray, points: np.ndarray, t: float,
               removed: Sequence[int], stamp: dict[str, Any]) -> list[dict[str, Any]]:
        """One frame: ``track_ids`` (confirmed, observed, unique) with their ``class_ids`` and
        normalised reference ``points``; ``removed`` ids expired. ``stamp`` (frame_id, pts,
        time) goes into every event. Returns the events, oldest first."""
        events = self._update(track_ids, class_ids, points, t, removed, stamp)
        if events:
            self._counts = None
        return events

    def _update(self, track_ids: np.ndarray, class_ids: np.ndarray, points: np.ndarray, t: float,
                removed: Sequence[int], stamp: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        r = self._rows
        if self.empty:
            return events
        if removed:
            events += self._expire(np.asarray(removed, dtype=np.int64), stamp)
        if track_ids.size == 0:
            return events
        order = track_ids.argsort(kind="stable")
        ids, cls, pts = track_ids[order], class_ids[order], points[order]
        pos = r.ids.searchsorted(ids)
        # A known id is where searchsorted puts it (an id past the last one clips to a row
        # that holds another id).
        known = r.ids.take(pos, mode="clip") == ids if r.ids.shape[0] else np.zeros(ids.shape[0], dtype=bool)
        if not known.all():
            r.add(ids[~known], cls[~known], pts[~known], t)   # new ids are the largest: order holds
            pos = r.ids.searchsorted(ids)
        px, py = pts[:, 0], pts[:, 1]
        if self.lines:
            events += self._lines(pos, ids, cls, pts, px, py, t, stamp)
        if self.zones:
            events += self._zones(pos, ids, cls, px, py, t, stamp)
        r.point[pos] = pts
        r.last_t[pos] = t
        return events

    def _event(self, kind: str, key: str, name: str, track_id: int, class_id: int,
               stamp: dict[str, Any]) -> dict[str, Any]:
        return {"type": "event", "event": kind, key: name, "track_id": int(track_id),
                "label": self.label(int(class_id)), "class_id": int(class_id), **stamp}

    def _lines(self, pos: np.ndarray, ids: np.ndarray, cls: np.ndarray, pts: np.ndarray, px: np.ndarray,
               py: np.ndarray, t: float, stamp: dict[str, Any]) -> list[dict[str, Any]]:
        r = self._rows
        c_now = self._cross(px, py)
        side_now = np.sign(c_now).astype(np.int8)                          # (N, L): -1 left, +1 right
        applies = self._applies(self.lines, cls) & (side_now != 0)
        settled, cand = r.side[pos], r.cand[pos]
        if not cand.any() and not (applies & (side_now != settled)).any():
            return []        # the common frame: everyone on their settled side, nothing pending
        cand_t, cand_ok = r.cand_t[pos], r.cand_ok[pos]
        first = applies & (settled == 0)
        settled = np.where(first, side_now, settled)
        back = applies & (side_now == settled)
        cand = np.where(back, 0, cand)                                    # returned in time: nothing
        moved = applies & (side_now != settled) & (side_now != cand)
        if moved.any():
            # Did the move from the last point cross the segment itself, not the line beyond it?
            prev = r.point[pos]
            c_prev = self._cross(prev[:, 0], prev[:, 1])
            denom = np.where(c_prev == c_now, 1.0, c_prev - c_now)
            s = np.clip(c_prev / denom, 0.0, 1.0)                        # (N, L)
            hit = prev[:, None, :] + s[..., None] * (pts - prev)[:, None, :]
            d = self._d
            u = np.sum((hit - self._a[None]) * d[None], axis=2) / np.sum(d * d, axis=1)[None]
            ok = (u >= 0.0) & (u <= 1.0)
            cand = np.where(moved, side_now, cand)
            cand_t = np.where(moved, t, cand_t)
            cand_ok = np.where(moved, ok, cand_ok)
        done = applies & (cand != 0) & (side_now == cand) & (t - cand_t >= self.min_side_s)
        events = []
        if done.any():
            for i, j in zip(*np.nonzero(done), strict=True):
                new_side = int(cand[i, j])
                if cand_ok[i, j]:
                    direction = "left" if new_side < 0 else "right"
                    c = self._line_counts[j]
                    c[direction] += 1
                    per = c["by_class"].setdefault(self.label(int(cls[i])), {"left": 0, "right": 0})
                    per[direction] += 1
                    ev = self._event("line_cross", "line", self.lines[j].name, ids[i], cls[i], stamp)
                    ev["direction"] = direction
                    events.append(ev)
                settled[i, j] = new_side
            cand = np.where(done, 0, cand)
        r.side[pos], r.cand[pos], r.cand_t[pos], r.cand_ok[pos] = settled, cand, cand_t, cand_ok
        return events

    def _cross(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """``(N, L)``: (b - a) x (p - a) of every point with every line (its sign is the side)."""
        return self._dx * (py[:, None] - self._ay) - self._dy * (px[:, None] - self._ax)

    def _zones(self, pos: np.ndarray, ids: np.ndarray, cls: np.ndarray, px: np.ndarray, py: np.ndarray,
               t: float, stamp: dict[str, Any]) -> list[dict[str, Any]]:
        r = self._rows
        # Every zone at once: ray casting over all zones' edges, the parity of the crossings
        # per zone.
        x, y = px[:, None], py[:, None]
        hits = (self._edge_y1 > y) != (self._edge_y2 > y)
        hits &= x < y * self._edge_slope + self._edge_x0                          # (N, edges)
        now = np.logical_xor.reduceat(hits, self._edge_starts, axis=1)            # (N, Z)
        applies = self._applies(self.zones, cls)
        inside, since = r.inside[pos], r.zcand_t[pos]
        differs = applies & (now != inside)
        if not differs.any() and np.isnan(since).all():
            return []        # the common frame: nobody entering or leaving
        entered = r.entered[pos]
        since = np.where(differs & np.isnan(since), t, np.where(differs, since, _NAN))
        done = differs & (t - since >= self.min_side_s)
        events = []
        if done.any():
            for i, j in zip(*np.nonzero(done), strict=True):
                zone = self.zones[j].name
                if now[i, j]:
                    entered[i, j] = since[i, j]
                    self._zone_entered[j] += 1
                    events.append(self._event("zone_enter", "zone", zone, ids[i], cls[i], stamp))
                else:
                    ev = self._event("zone_exit", "zone", zone, ids[i], cls[i], stamp)
                    ev["dwell"] = round(float(since[i, j] - entered[i, j]), 3)
                    events.append(ev)
                inside[i, j] = now[i, j]
            since = np.where(done, _NAN, since)
        r.inside[pos], r.zcand_t[pos], r.entered[pos] = inside, since, entered
        return events

    def _expire(self, removed: np.ndarray, stamp: dict[str, Any]) -> list[dict[str, Any]]:
        """Drop expired tracks; one still inside a zone leaves it (dwell to its last sighting)."""
        r = self._rows
        gone = np.isin(r.ids, removed)
        events = []
        if self.zones and gone.any():
            for i, j in zip(*np.nonzero(r.inside & gone[:, None]), strict=True):
                ev = self._event("zone_exit", "zone", self.zones[j].name, r.ids[i], r.cls[i], stamp)
                ev["dwell"] = round(float(r.last_t[i] - r.entered[i, j]), 3)
                events.append(ev)
        if gone.any():
            r.keep(~gone)
        return events
