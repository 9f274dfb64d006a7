"""The tracker's behaviour: identities by frame time, confirmation, expiry, bounded state."""

from __future__ import annotations

import numpy as np
import pytest

from rtc_server.analytics import Detections, StreamAnalytics, Tracker, TrackerConfig, parse_lines, parse_zones


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """Rows of (x1, y1, x2, y2, score, class_id)."""
    if not rows:
        return Detections.empty()
    a = np.asarray(rows, dtype=np.float64)
    return Detections.of(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


def moving(x0: float, y0: float, vx: float, vy: float, t: float, w: float = 60, h: float = 120,
           score: float = 0.9, cls: int = 0) -> tuple[float, float, float, float, float, int]:
    x, y = x0 + vx * t, y0 + vy * t
    return (x, y, x + w, y + h, score, cls)


@pytest.mark.parametrize("rate", [30, 5, 2])
def test_ids_hold_at_30_5_and_2_detections_per_second(rate: int) -> None:
    """Two objects at constant speed (150 px/s: at 2/s a step is wider than the box) keep
    one id each for 10 s, whatever the sampling, because the filter advances by time."""
    tr = Tracker()
    seen: list[set[int]] = [set(), set()]
    for k in range(10 * rate):
        t = k / rate
        out = tr.update(dets(moving(0, 50, 150, 0, t), moving(100, 300, 120, -10, t)), t)
        if k >= 2:
            for i in range(2):
                tid = out.track_id(i)
                assert tid is not None, (k, i)
                seen[i].add(tid)
    assert all(len(s) == 1 for s in seen) and seen[0] != seen[1]


def test_ids_survive_a_six_times_sampling_gap_with_the_frames_real_times() -> None:
    """Every 6th frame of a 30 fps stream, with its real pts: same ids as at full rate."""
    full, sampled = Tracker(), Tracker()
    ids_full, ids_sampled = set(), set()
    for k in range(300):
        t = k / 30
        d = dets(moving(0, 50, 200, 20, t), moving(900, 60, -180, 10, t, cls=2))
        out = full.update(d, t)
        if k >= 2:
            ids_full.add((out.track_id(0), out.track_id(1)))
        if k % 6 == 0:
            out = sampled.update(d, t)
            if k >= 12:
                ids_sampled.add((out.track_id(0), out.track_id(1)))
    assert len(ids_full) == 1 and len(ids_sampled) == 1


@pytest.mark.parametrize("rate", [30, 5, 2])
def test_an_object_that_turns_back_keeps_its_id(rate: int) -> None:
    """200 px/s to the right for 2 s, then straight back (a bounce, a person turning round):
    the prediction runs on past the turn and loses it; recovery by the last observed box
    keeps the id. Without it (``recover_iou=1``) the turn forks a new id at 5 and 2
    detections/s — checked, so this test can tell the two apart."""
    def ids(config: TrackerConfig) -> set[int | None]:
        tr = Tracker(config)
        seen: set[int | None] = set()
        for k in range(4 * rate):
            t = k / rate
            x = 200 * t if t <= 2 else 400 - 200 * (t - 2)
            out = tr.update(dets((x, 100, x + 60, 220, 0.9, 0)), t)
            if k >= 2:
                seen.add(out.track_id(0))
        return seen

    assert len(ids(TrackerConfig())) == 1
    if rate < 30:
        assert len(ids(TrackerConfig(recover_iou=1.0))) > 1


def test_two_objects_crossing_keep_their_ids() -> None:
    """Same class, crossing paths with full overlap at the crossing: no swap."""
    tr = Tracker()
    first = None
    for k in range(90):
        t = k / 30
        out = tr.update(dets(moving(0, 100, 200, 0, t), moving(560, 110, -200, 0, t)), t)
        ids = (out.track_id(0), out.track_id(1))
        if k == 3:
            first = ids
        if k > 3:
            assert ids == first, k
    assert first is not None and None not in first


def test_a_tentative_track_has_no_id_until_confirmed() -> None:
    tr = Tracker(TrackerConfig(min_hits=3))
    d = dets((10, 10, 50, 90, 0.9, 0))
    assert tr.update(d, 0.0).track_id(0) is None
    assert tr.update(d, 0.1).track_id(0) is None
    assert tr.update(d, 0.2).track_id(0) == 1


def test_a_low_score_detection_extends_a_track_but_never_starts_one() -> None:
    tr = Tracker()
    assert tr.update(dets((10, 10, 50, 90, 0.3, 0)), 0.0).track_id(0) is None
    assert len(tr) == 0
    tr.update(dets((10, 10, 50, 90, 0.9, 0)), 0.1)
    tid = tr.update(dets((10, 10, 50, 90, 0.9, 0)), 0.2).track_id(0)
    assert tid is not None
    # occluded: the detector is unsure, the track holds (ByteTrack's second stage).
    assert tr.update(dets((11, 10, 51, 90, 0.2, 0)), 0.3).track_id(0) == tid


def test_matching_is_class_aware() -> None:
    """Of two overlapping detections the one of the track's class wins; with a hard rule
    (``class_penalty=1``) another class never continues a track."""
    tr = Tracker()
    for k in range(3):
        out = tr.update(dets((10, 10, 50, 90, 0.9, 0)), k / 30)
    tid = out.track_id(0)
    out = tr.update(dets((10, 10, 50, 90, 0.9, 1), (14, 10, 54, 90, 0.9, 0)), 3 / 30)
    assert out.track_id(1) == tid and out.track_id(0) != tid
    hard = Tracker(TrackerConfig(class_penalty=1.0))
    for k in range(3):
        out = hard.update(dets((10, 10, 50, 90, 0.9, 0)), k / 30)
    assert hard.update(dets((10, 10, 50, 90, 0.9, 1)), 3 / 30).track_id(0) != out.track_id(0)


def test_lost_tracks_coast_for_their_time_budget_then_expire_and_ids_are_never_reused() -> None:
    tr = Tracker(TrackerConfig(max_lost_s=1.0))
    box = (100, 100, 160, 220, 0.9, 0)
    for k in range(3):
        tid = tr.update(dets(box), k / 30).track_id(0)
    assert tid == 1
    # Gone for 0.8 s (within budget): it comes back with its id.
    tr.update(dets(), 0.1)
    assert tr.update(dets(box), 0.9).track_id(0) == tid
    # Gone for 1.5 s: expired (and reported), the same place later is a new object.
    out = tr.update(dets(), 2.4)
    assert out.removed == (tid,)
    assert len(tr) == 0
    for k in range(3):
        new = tr.update(dets(box), 2.5 + k / 30).track_id(0)
    assert new == 2


def test_predicted_boxes_for_missed_confirmed_tracks_are_flagged() -> None:
    tr = Tracker(TrackerConfig(predict_s=0.5))
    for k in range(5):
        tr.update(dets(moving(0, 0, 300, 0, k / 30)), k / 30)
    out = tr.update(dets(), 6 / 30)
    assert out.n_detections == 0 and len(out.track_ids) == 1
    assert bool(out.predicted[0]) and out.track_id(0) == 1
    # It moved on with the track's velocity past where it was last seen (x = 40).
    assert 300 * 4 / 30 + 5 < out.boxes[0, 0] < 300 * 6 / 30 + 5
    assert len(tr.update(dets(), 1.0).track_ids) == 0                # past predict_s: not sent


@pytest.mark.slow
def test_state_stays_bounded_over_a_long_run_with_churn() -> None:
    """20k frames (11 minutes at 30 fps; 400 objects coming and going all the time): live
    state stays small and ids keep growing (never reused)."""
    analytics = StreamAnalytics(
        lines=parse_lines([{"name": "mid", "a": [0.5, 0.0], "b": [0.5, 1.0]}]),
        zones=parse_zones([{"name": "left", "polygon": [[0, 0], [0.4, 0], [0.4, 1], [0, 1]]}]))
    biggest = 0
    n_frames = 20_000
    # A new object every 50 frames, each lives 120 frames crossing the frame (~3 alive).
    for k in range(n_frames):
        t = k / 30
        born = np.arange(max(0, k // 50 - 3), k // 50 + 1) * 50
        alive = born[(k - born >= 0) & (k - born < 120)]
        x = (k - alive) * 5.0
        y = 50.0 + (alive % 7) * 60.0
        boxes = np.stack([x, y, x + 40, y + 80], axis=1)
        d = Detections.of(boxes, np.full(len(alive), 0.9), np.zeros(len(alive), dtype=np.int64))
        analytics.update(d, t, width=640, height=480, frame_id=k)
        biggest = max(biggest, analytics.state_size())
    assert biggest <= 20
    # One id per object, none reused: ids reached the number of objects.
    assert analytics.tracker.next_id - 1 == n_frames // 50


def test_analytics_is_pure_computation() -> None:
    """rtc_server.analytics imports numpy, scipy and the standard library only: no settings,
    streams, engine, HTTP or I/O (docs/tracking.md; the architecture's "no I/O")."""
    import ast
    import sys
    from pathlib import Path

    import rtc_server.analytics

    allowed = {"numpy", "scipy", "__future__"} | set(sys.stdlib_module_names)
    banned_stdlib = {"os", "socket", "subprocess", "asyncio", "threading", "io", "pathlib", "urllib", "http"}
    offenders = []
    for path in Path(rtc_server.analytics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                offenders.append(f"{path.name}: {'.' * node.level}{node.module or ''} (outside the package)")
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top not in allowed or top in banned_stdlib:
                    offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders
