"""Zones and lines: parsing with reasons, crossings with direction and hysteresis, zone dwell."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rtc_server.analytics import Detections, GeometryError, StreamAnalytics, parse_lines, parse_zones
from rtc_server.analytics.geometry import points_in_polygon, side_of_line

NAMES = ("person", "bicycle", "car")
W, H = 1000, 1000


# ----- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "reason"), [
    ([{"name": "z", "polygon": [[0, 0], [1, 0]]}], "at least 3 points"),
    ([{"name": "z", "polygon": [[0, 0], [1.2, 0], [1, 1]]}], "fractions of the frame"),
    ([{"name": "z", "polygon": [[0, 0], [-0.1, 0], [1, 1]]}], "fractions of the frame"),
    ([{"name": "z", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}], "intersects itself"),
    ([{"name": "z", "polygon": [[0, 0], [0.5, 0.5], [1, 1]]}], "no area"),
    ([{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}, {"name": "z", "polygon": [[0, 0], [1, 0], [0, 1]]}],
     "duplicate name 'z'"),
    ([{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]], "classes": ["unicorn"]}], "unknown class 'unicorn'"),
    ([{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]], "classes": [99]}], "unknown class 99"),
    ([{"name": "", "polygon": [[0, 0], [1, 0], [1, 1]]}], "non-empty string"),
    ([{"name": "z", "polygon": [[0, 0], ["a", 0], [1, 1]]}], "numbers"),
    ({"name": "z"}, "a list is expected"),
])
def test_bad_zones_say_why(raw: Any, reason: str) -> None:
    with pytest.raises(GeometryError, match=reason):
        parse_zones(raw, NAMES)


@pytest.mark.parametrize(("raw", "reason"), [
    ([{"name": "l", "a": [0.5, 0.5], "b": [0.5, 0.5]}], "zero length"),
    ([{"name": "l", "a": [0.5, 0.5]}], "needs end points"),
    ([{"name": "l", "a": [0.5, 0.5], "b": [0.5, 2]}], "fractions of the frame"),
    ([{"name": "l", "a": [0, 0], "b": [1, 1]}, {"name": "l", "a": [0, 1], "b": [1, 0]}], "duplicate name 'l'"),
    ([{"name": "l", "a": [0, 0], "b": [1, 1], "classes": ["dragon"]}], "unknown class 'dragon'"),
    ([{"name": "l", "a": [0, 0, 0], "b": [1, 1]}], "a point is"),
])
def test_bad_lines_say_why(raw: Any, reason: str) -> None:
    with pytest.raises(GeometryError, match=reason):
        parse_lines(raw, NAMES)


def test_good_geometry_parses_with_classes_by_label_or_id() -> None:
    (z,) = parse_zones([{"name": "door", "polygon": [[0, 0], [1, 0], [1, 1], [0, 0]], "classes": ["person", 2]}],
                       NAMES)
    assert z.polygon.shape == (3, 2)   # the repeated closing point is dropped
    assert z.classes == frozenset({0, 2})
    assert z.to_dict(NAMES)["classes"] == ["person", "car"]
    (ln,) = parse_lines([{"name": "gate", "a": [0.1, 0.5], "b": [0.9, 0.5]}], NAMES)
    assert ln.a == (0.1, 0.5) and ln.classes is None


def test_point_in_polygon_concave() -> None:
    # A "U": the notch between the arms is outside.
    u = np.array([[0, 0], [0.3, 0], [0.3, 0.7], [0.7, 0.7], [0.7, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    pts = np.array([[0.1, 0.5], [0.5, 0.3], [0.5, 0.9], [0.9, 0.1], [1.5, 0.5]])
    assert points_in_polygon(pts, u).tolist() == [True, False, True, True, False]


def test_sides_as_seen_from_a_facing_b() -> None:
    a, b = np.array([[0.0, 0.5]]), np.array([[1.0, 0.5]])           # facing right on screen
    side, within = side_of_line(np.array([[0.5, 0.2], [0.5, 0.8], [1.5, 0.2]]), a, b)
    assert side[:, 0].tolist() == [-1, 1, -1]                         # up is left, down is right
    assert within[:, 0].tolist() == [True, True, False]


# ----- events --------------------------------------------------------------------------------
def run(analytics: StreamAnalytics, path: list[tuple[float, float]], rate: float = 30.0, cls: int = 0,
        size: float = 40.0) -> list[dict[str, Any]]:
    """Feed one object whose bottom centre follows ``path`` (normalised), one point per frame."""
    events = []
    for k, (x, y) in enumerate(path):
        px, py = x * W, y * H
        d = Detections.of([[px - size / 2, py - 2 * size, px + size / 2, py]], [0.9], [cls])
        events += analytics.update(d, k / rate, width=W, height=H, frame_id=k, pts=k * 3000,
                                   time=1000.0 + k / rate).events
    return events


def straight(x0: float, x1: float, y: float, n: int) -> list[tuple[float, float]]:
    return [(x0 + (x1 - x0) * k / (n - 1), y) for k in range(n)]


def vertical_line() -> StreamAnalytics:
    return StreamAnalytics(lines=parse_lines([{"name": "gate", "a": [0.5, 0.0], "b": [0.5, 1.0]}], NAMES),
                           class_names=NAMES)


def test_a_crossing_counts_once_with_the_direction_seen_from_a_facing_b() -> None:
    # a at the top, b at the bottom: facing down the screen, +x (screen right) is the left hand.
    a = vertical_line()
    ev = run(a, straight(0.2, 0.8, 0.5, 60))
    assert [(e["event"], e["line"], e["direction"]) for e in ev] == [("line_cross", "gate", "left")]
    e = ev[0]
    assert set(e) == {"type", "event", "line", "direction", "track_id", "label", "class_id", "frame_id", "pts", "time"}
    assert (e["type"], e["label"], e["class_id"], e["track_id"]) == ("event", "person", 0, 1)
    assert e["pts"] == e["frame_id"] * 3000 and e["time"] == pytest.approx(1000 + e["frame_id"] / 30)
    assert a.update(Detections.empty(), 3.0, width=W, height=H, frame_id=99).counts == {
        "lines": {"gate": {"left": 1, "right": 0, "by_class": {"person": {"left": 1, "right": 0}}}}, "zones": {}}
    ev = run(vertical_line(), straight(0.8, 0.2, 0.5, 60))
    assert [e["direction"] for e in ev] == ["right"]


def test_direction_flips_with_the_lines_orientation() -> None:
    up = StreamAnalytics(lines=parse_lines([{"name": "g", "a": [0.5, 1.0], "b": [0.5, 0.0]}]))
    assert [e["direction"] for e in run(up, straight(0.2, 0.8, 0.5, 60))] == ["right"]
    horizontal = StreamAnalytics(lines=parse_lines([{"name": "g", "a": [0.0, 0.5], "b": [1.0, 0.5]}]))
    down = [(0.5, 0.2 + 0.6 * k / 59) for k in range(60)]   # moving down the screen: facing right, that's right
    assert [e["direction"] for e in run(horizontal, down)] == ["right"]


def test_jitter_on_the_line_counts_once() -> None:
    """A box flickering across the line every other frame, then staying: one crossing."""
    path = straight(0.3, 0.49, 0.5, 20)
    path += [(0.49 if k % 2 else 0.51, 0.5) for k in range(40)]      # 1.3 s of jitter
    path += [(0.52, 0.5)] * 30
    ev = run(vertical_line(), path)
    assert [e["direction"] for e in ev] == ["left"]


def test_a_short_excursion_across_does_not_count() -> None:
    path = straight(0.3, 0.49, 0.5, 20) + [(0.51, 0.5)] * 5 + [(0.45, 0.5)] * 30   # 0.17 s on the far side
    assert run(vertical_line(), path) == []


def test_there_and_back_counts_both_ways_at_two_detections_per_second() -> None:
    """Half a second between sightings: the first one on the new side already counts."""
    xs = [0.36, 0.41, 0.46, 0.51, 0.56, 0.56, 0.56, 0.51, 0.46, 0.41]   # 100 px/s, stop, back
    path = [(x, 0.5) for x in xs]
    ev = run(vertical_line(), path, rate=2.0, size=80)
    assert [e["direction"] for e in ev] == ["left", "right"]


def test_passing_beyond_the_segments_end_does_not_count() -> None:
    short = StreamAnalytics(lines=parse_lines([{"name": "g", "a": [0.5, 0.0], "b": [0.5, 0.3]}]))
    assert run(short, straight(0.2, 0.8, 0.6, 60)) == []


def test_line_classes_filter() -> None:
    cars = StreamAnalytics(lines=parse_lines([{"name": "g", "a": [0.5, 0], "b": [0.5, 1], "classes": ["car"]}],
                                             NAMES), class_names=NAMES)
    assert run(cars, straight(0.2, 0.8, 0.5, 60), cls=0) == []
    cars = StreamAnalytics(lines=parse_lines([{"name": "g", "a": [0.5, 0], "b": [0.5, 1], "classes": ["car"]}],
                                             NAMES), class_names=NAMES)
    assert [e["label"] for e in run(cars, straight(0.2, 0.8, 0.5, 60), cls=2)] == ["car"]


def test_zone_enter_and_exit_with_dwell() -> None:
    a = StreamAnalytics(zones=parse_zones([{"name": "box", "polygon": [[0.4, 0], [0.6, 0], [0.6, 1], [0.4, 1]]}]),
                        class_names=NAMES)
    # 0.3 -> 0.7 over 81 frames at 30/s: inside (0.4, 0.6) from frame 21 to frame 60.
    path = straight(0.3, 0.7, 0.5, 81) + [(0.7, 0.5)] * 20
    ev = run(a, path)
    assert [e["event"] for e in ev] == ["zone_enter", "zone_exit"]
    enter, leave = ev
    assert enter["zone"] == leave["zone"] == "box"
    assert leave["dwell"] == pytest.approx(40 / 30, abs=0.05)
    counts = a.update(Detections.empty(), 101 / 30, width=W, height=H, frame_id=101).counts
    assert counts is not None and counts["zones"] == {"box": {"inside": 0, "entered": 1}}


def test_inside_now_and_a_track_that_expires_inside_leaves_the_zone() -> None:
    a = StreamAnalytics(zones=parse_zones([{"name": "all", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]))
    ev = run(a, [(0.5, 0.5)] * 30)
    assert [e["event"] for e in ev] == ["zone_enter"]
    r = a.update(Detections.empty(), 1.5, width=W, height=H, frame_id=45)
    assert r.counts is not None and r.counts["zones"]["all"]["inside"] == 1     # still coasting
    r = a.update(Detections.empty(), 3.0, width=W, height=H, frame_id=90)
    assert [e["event"] for e in r.events] == ["zone_exit"]
    assert r.counts is not None and r.counts["zones"]["all"] == {"inside": 0, "entered": 1}
    assert a.state_size() == 0


def test_new_shapes_keep_working_when_an_older_track_shows_up_later() -> None:
    """Shapes replaced while track 1 is briefly unseen: track 2 gets state first, then
    track 1; each track's crossing is still its own."""
    a = StreamAnalytics(class_names=NAMES)

    def frame(k: int, xs: list[float]) -> list[dict[str, Any]]:
        boxes = [[x * W - 20, 400, x * W + 20, 500] for x in xs]
        d = Detections.of(boxes, [0.9] * len(xs), [0] * len(xs))
        return a.update(d, k / 30, width=W, height=H, frame_id=k).events

    for k in range(5):
        frame(k, [0.2, 0.8])
    a.set_shapes((), parse_lines([{"name": "g", "a": [0.5, 0.0], "b": [0.5, 1.0]}], NAMES))
    for k in range(5, 10):
        frame(k, [0.8])                  # only track 2 (track 1 coasting)
    events = []
    for k in range(10, 70):
        x = 0.2 + 0.6 * (k - 10) / 59    # track 1 walks across the line; track 2 stays
        events += frame(k, [x, 0.8])
    assert [(e["track_id"], e["direction"]) for e in events] == [(1, "left")]


def test_counts_handed_out_earlier_keep_their_values() -> None:
    """A message built before a crossing still carries the counts it was built with."""
    a = vertical_line()
    before = None
    for k, (x, y) in enumerate(straight(0.2, 0.8, 0.5, 60)):
        d = Detections.of([[x * W - 20, y * H - 80, x * W + 20, y * H]], [0.9], [0])
        counts = a.update(d, k / 30, width=W, height=H, frame_id=k).counts
        if k == 5:
            before = counts
    assert before is not None and before["lines"]["gate"]["left"] == 0
    assert counts is not None and counts["lines"]["gate"]["left"] == 1
