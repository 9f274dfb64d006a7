"""The project's MOTA / IDF1 / ID-switch implementation on hand-made cases with known answers."""

from __future__ import annotations

import math

import pytest

from rtc_server.analytics.evaluate import FrameTruth, evaluate


def box(x: float) -> list[float]:
    return [x, 0.0, x + 10.0, 10.0]


def frames(rows: list[list[tuple[int, float]]]) -> list[FrameTruth]:
    return [FrameTruth.of([i for i, _ in r], [box(x) for _, x in r]) for r in rows]


def test_perfect_tracking_scores_one() -> None:
    gt = frames([[(1, 0), (2, 50)]] * 5)
    s = evaluate(gt, frames([[(7, 0), (9, 50)]] * 5))
    assert (s.mota, s.idf1, s.id_switches, s.false_negatives, s.false_positives) == (1.0, 1.0, 0, 0, 0)


def test_one_id_switch_halfway() -> None:
    # One object, 4 frames; the tracker calls it 1 for two frames, then 2.
    gt = frames([[(1, 0)]] * 4)
    s = evaluate(gt, frames([[(1, 0)], [(1, 0)], [(2, 0)], [(2, 0)]]))
    assert s.id_switches == 1
    assert s.mota == pytest.approx(1 - 1 / 4)
    # The best single correspondence covers 2 of the 4 frames on each side: 2*2 / (4 + 4).
    assert s.idf1 == pytest.approx(0.5)


def test_misses_and_false_positives() -> None:
    gt = frames([[(1, 0)], [(1, 0)], [(1, 0)], [(1, 0)]])
    hyp = frames([[(5, 0)], [], [(5, 0), (6, 200)], [(5, 0)]])
    s = evaluate(gt, hyp)
    assert (s.false_negatives, s.false_positives, s.id_switches) == (1, 1, 0)
    assert s.mota == pytest.approx(1 - 2 / 4)
    assert s.idf1 == pytest.approx(2 * 3 / (4 + 4))


def test_swap_of_two_crossing_objects_counts_two_switches() -> None:
    gt = frames([[(1, 0), (2, 100)]] * 2 + [[(1, 0), (2, 100)]] * 2)
    hyp = frames([[(1, 0), (2, 100)]] * 2 + [[(2, 0), (1, 100)]] * 2)
    s = evaluate(gt, hyp)
    assert s.id_switches == 2
    assert s.idf1 == pytest.approx(0.5)


def test_a_correspondence_is_kept_while_it_still_overlaps() -> None:
    # Frame 2: hypothesis 8 overlaps gt 1 better than 7 does, but 7 still overlaps: no switch.
    gt = frames([[(1, 0)], [(1, 0)]])
    hyp = [FrameTruth.of([7], [box(0)]), FrameTruth.of([7, 8], [box(3), box(0)])]
    s = evaluate(gt, hyp)
    assert s.id_switches == 0 and s.false_positives == 1


def test_below_the_iou_threshold_is_no_match() -> None:
    gt = frames([[(1, 0)]])
    s = evaluate(gt, frames([[(1, 6)]]))   # IoU 4/16 = 0.25 < 0.5
    assert (s.false_negatives, s.false_positives, s.idtp) == (1, 1, 0)
    assert math.isclose(s.mota, -1.0)


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="frames"):
        evaluate(frames([[(1, 0)]]), [])
