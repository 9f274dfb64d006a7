"""Zones (polygons) and lines (segments) in normalised coordinates, parsed and validated.

Coordinates are fractions of the frame's width and height (0-1), so a zone drawn on a
640x480 preview still fits the 1920x1080 stream it was drawn for. Parsing takes the JSON
the API accepts (``{"name", "polygon": [[x, y], ...], "classes"?}`` and
``{"name", "a": [x, y], "b": [x, y], "classes"?}``) and raises ``GeometryError`` with the
reason on anything it cannot use; the HTTP layer turns that into a 400.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GeometryError", "Line", "Zone", "edges_of", "parse_lines", "parse_zones", "points_in_polygon",
           "side_of_line"]

#: A zone or line has at most this many vertices / a stream at most this many of each:
#: client-supplied geometry must not make per-frame work unbounded.
MAX_VERTICES = 64
MAX_SHAPES = 32
MAX_NAME = 64


class GeometryError(ValueError):
    """A zone or line cannot be used; the message says which one and why."""


@dataclass(frozen=True)
class Zone:
    name: str
    #: ``(K, 2)`` normalised vertices, in order (either winding).
    polygon: np.ndarray
    #: Class ids the zone counts; None counts every class.
    classes: frozenset[int] | None = None

    def to_dict(self, class_names: Sequence[str] = ()) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "polygon": self.polygon.tolist()}
        if self.classes is not None:
            d["classes"] = _class_list(self.classes, class_names)
        return d


@dataclass(frozen=True)
class Line:
    name: str
    a: tuple[float, float]
    b: tuple[float, float]
    classes: frozenset[int] | None = None

    def to_dict(self, class_names: Sequence[str] = ()) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "a": list(self.a), "b": list(self.b)}
        if self.classes is not None:
            d["classes"] = _class_list(self.classes, class_names)
        return d


def _class_list(classes: frozenset[int], names: Sequence[str]) -> list[Any]:
    return [names[c] if c < len(names) else c for c in sorted(classes)]


# ----- parsing -------------------------------------------------------------------------------
def _point(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise GeometryError(f"{where}: a point is [x, y], got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise GeometryError(f"{where}: coordinates are numbers, got {value!r}")
        if not 0.0 <= v <= 1.0:
            raise GeometryError(f"{where}: coordinates are fractions of the frame (0-1), got {value!r}")
        out.append(float(v))
    return out[0], out[1]


def _name(item: Any, kind: str, index: int, seen: set[str]) -> str:
    if not isinstance(item, dict):
        raise GeometryError(f"{kind}[{index}]: an object is expected, got {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise GeometryError(f"{kind}[{index}]: \"name\" is a non-empty string")
    if len(name) > MAX_NAME:
        raise GeometryError(f"{kind}[{index}]: name longer than {MAX_NAME} characters")
    if name in seen:
        raise GeometryError(f"{kind}: duplicate name {name!r}")
    seen.add(name)
    return name


def _classes(item: dict[str, Any], where: str, class_names: Sequence[str]) -> frozenset[int] | None:
    """``classes``: labels (``"person"``) or class ids; unknown ones are errors."""
    raw = item.get("classes")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise GeometryError(f"{where}: \"classes\" is a non-empty list of labels or class ids")
    index = {n: i for i, n in enumerate(class_names)}
    out = set()
    for c in raw:
        if isinstance(c, str) and c in index:
            out.add(index[c])
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(class_names):
            out.add(c)
        else:
            raise GeometryError(f"{where}: unknown class {c!r}")
    return frozenset(out)


def _check_list(raw: Any, kind: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise GeometryError(f"{kind}: a list is expected, got {type(raw).__name__}")
    if len(raw) > MAX_SHAPES:
        raise GeometryError(f"{kind}: at most {MAX_SHAPES}, got {len(raw)}")
    return raw


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """Do two segments share a point (touching and collinear overlap included)?"""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True

    def on(a: np.ndarray, b: np.ndarray, p: np.ndarray, d: float) -> bool:
        return d == 0 and min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])

    return on(q1, q2, p1, d1) or on(q1, q2, p2, d2) or on(p1, p2, q1, d3) or on(p1, p2, q2, d4)


def _self_intersection(poly: np.ndarray) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges that meet, or None for a simple polygon."""
    k = poly.shape[0]
    for i in range(k):
        for j in range(i + 1, k):
            if j == i + 1 or (i == 0 and j == k - 1):
                continue
            if _segments_cross(poly[i], poly[(i + 1) % k], poly[j], poly[(j + 1) % k]):
                return i, j
    return None


def parse_zones(raw: Any, class_names: Sequence[str] = ()) -> tuple[Zone, ...]:
    """Validate ``"zones"`` JSON into ``Zone``s, or raise ``GeometryError`` saying why."""
    seen: set[str] = set()
    zones = []
    for i, item in enumerate(_check_list(raw, "zones")):
        name = _name(item, "zones", i, seen)
        where = f"zone {name!r}"
        pts = item.get("polygon")
        if not isinstance(pts, list):
            raise GeometryError(f"{where}: \"polygon\" is a list of [x, y] points")
        if len(pts) < 3:
            raise GeometryError(f"{where}: a polygon needs at least 3 points, got {len(pts)}")
        if len(pts) > MAX_VERTICES:
            raise GeometryError(f"{where}: at most {MAX_VERTICES} points, got {len(pts)}")
        poly = np.array([_point(p, where) for p in pts], dtype=np.float64)
        if len(pts) > 3 and np.allclose(poly[0], poly[-1]):
            poly = poly[:-1]  # a closed ring written out: drop the repeated first point
        if np.any(np.all(np.isclose(poly, np.roll(poly, -1, axis=0)), axis=1)):
            raise GeometryError(f"{where}: repeated consecutive point")
        hit = _self_intersection(poly)
        if hit is not None:
            raise GeometryError(f"{where}: the polygon intersects itself (edges {hit[0]} and {hit[1]})")
        area = 0.5 * float(np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1]))
        if abs(area) < 1e-6:
            raise GeometryError(f"{where}: the polygon has no area (its points are on one line)")
        zones.append(Zone(name, poly, _classes(item, where, class_names)))
    return tuple(zones)


def parse_lines(raw: Any, class_names: Sequence[str] = ()) -> tuple[Line, ...]:
    """Validate ``"lines"`` JSON into ``Line``s, or raise ``GeometryError`` saying why."""
    seen: set[str] = set()
    lines = []
    for i, item in enumerate(_check_list(raw, "lines")):
        name = _name(item, "lines", i, seen)
        where = f"line {name!r}"
        if "a" not in item or "b" not in item:
            raise GeometryError(f"{where}: needs end points \"a\" and \"b\"")
        a, b = _point(item["a"], where), _point(item["b"], where)
        if math.hypot(b[0] - a[0], b[1] - a[1]) < 1e-3:
            raise GeometryError(f"{where}: zero length (a and b are the same point)")
        lines.append(Line(name, a, b, _classes(item, where, class_names)))
    return tuple(lines)


# ----- vectorised tests ----------------------------------------------------------------------
def edges_of(polygon: np.ndarray) -> np.ndarray:
    """``(4, K)``: x1, y1, x2 - x1 and 1 / (y2 - y1) of each edge, what ray casting needs
    (computed once per zone, not per frame)."""
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    dy = np.where(y2 == y1, np.inf, y2 - y1)
    return np.stack([x1, y1, x2 - x1, 1.0 / dy, y2])


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray casting: which of ``points`` ``(N, 2)`` lie inside ``polygon`` (``(K, 2)``
    vertices, or its ``edges_of``). Vectorised over points and edges at once."""
    if points.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    e = polygon if polygon.shape[0] == 5 and polygon.shape[1] != 2 else edges_of(polygon)
    x1, y1, dx, inv_dy, y2 = e
    x, y = points[:, 0:1], points[:, 1:2]
    straddles = (y1 > y) != (y2 > y)                       # (N, K)
    x_at = x1 + (y - y1) * dx * inv_dy
    return np.count_nonzero(straddles & (x < x_at), axis=1) % 2 == 1


def side_of_line(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``points`` ``(N, 2)`` and segments ``a``, ``b`` ``(L, 2)``: the side of each line
    (``(N, L)``: -1 left, +1 right, 0 on it, as seen standing at ``a`` facing ``b`` on the
    screen, y pointing down) and whether the point projects onto the segment (within its ends).

    In image coordinates (y down) the cross product ``(b - a) x (p - a)`` is negative for a
    point on the viewer's left: facing right along the screen, left is up."""
    d = b - a                                              # (L, 2)
    rel = points[:, None, :] - a[None, :, :]              # (N, L, 2)
    cross = d[None, :, 0] * rel[..., 1] - d[None, :, 1] * rel[..., 0]
    u = (rel[..., 0] * d[None, :, 0] + rel[..., 1] * d[None, :, 1]) / np.sum(d * d, axis=1)[None, :]
    return np.sign(cross).astype(np.int8), (u >= 0.0) & (u <= 1.0)
