"""IoU matching of teacher boxes to detector regions: hand-computed cases and a naive cross-check."""
import numpy as np
import pytest

from pipelines.stages.match import match_phrases
from schemas.boxes import box_iou
from schemas.records import TeacherBox

REGIONS = np.array(
    [
        [0, 0, 10, 10],  # r0
        [0, 0, 10, 20],  # r1: IoU with [0,0,10,10] = 100/200 = 0.5 exactly
        [5, 0, 15, 10],  # r2: IoU with [0,0,10,10] = 50/150
        [30, 30, 40, 40],  # r3: disjoint
    ],
    np.float32,
)


def test_hand_computed_iou_and_inclusive_threshold():
    boxes = [TeacherBox(0, (0, 0, 10, 10), 0.9)]
    align, iou, score = match_phrases(boxes, 2, REGIONS, 0.5)
    np.testing.assert_allclose(iou[0], [1.0, 0.5, 1 / 3, 0.0], atol=1e-6)
    assert align[0].tolist() == [1, 1, 0, 0]  # IoU exactly 0.5 counts: ">=" as the paper states
    assert align[1].tolist() == [0, 0, 0, 0] and iou[1].tolist() == [0] * 4 and score[1].tolist() == [0] * 4
    np.testing.assert_allclose(score[0], [0.9, 0.9, 0.9, 0.0])
    assert align.dtype == np.uint8 and align.shape == (2, 4)


def test_threshold_is_configurable():
    boxes = [TeacherBox(0, (0, 0, 10, 10), 0.9)]
    assert match_phrases(boxes, 1, REGIONS, 0.3)[0][0].tolist() == [1, 1, 1, 0]
    assert match_phrases(boxes, 1, REGIONS, 0.51)[0][0].tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="threshold"):
        match_phrases(boxes, 1, REGIONS, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        match_phrases(boxes, 1, REGIONS, 1.5)


def test_max_over_a_phrases_boxes_and_score_of_the_best_box():
    boxes = [
        TeacherBox(0, (0, 0, 10, 10), 0.3),  # best for r0, r1
        TeacherBox(0, (5, 0, 15, 10), 0.8),  # best for r2
        TeacherBox(1, (30, 30, 40, 40), 0.6),
        TeacherBox(1, (30, 30, 40, 40), 0.7),  # tie on IoU: the more confident box gives the score
    ]
    align, iou, score = match_phrases(boxes, 2, REGIONS)
    np.testing.assert_allclose(iou[0], [1.0, 0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(score[0], [0.3, 0.3, 0.8, 0.0], atol=1e-6)
    assert align[1].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(score[1], [0, 0, 0, 0.7], atol=1e-6)


def test_empty_cases():
    a, i, s = match_phrases([], 3, REGIONS)
    assert a.shape == i.shape == s.shape == (3, 4) and not a.any()
    a, i, s = match_phrases([], 0, REGIONS)
    assert a.shape == (0, 4)
    a, i, s = match_phrases([TeacherBox(0, (0, 0, 1, 1), 1.0)], 1, np.zeros((0, 4), np.float32))
    assert a.shape == (1, 0)


def test_vectorised_equals_naive_loop():
    rng = np.random.default_rng(3)
    regions = np.sort(rng.uniform(0, 100, (25, 4)).reshape(25, 2, 2), axis=1).transpose(0, 2, 1).reshape(25, 4)
    regions = regions[:, [0, 2, 1, 3]].astype(np.float32)  # x1, y1, x2, y2 sorted per axis
    boxes = []
    for _ in range(30):
        x1, x2 = sorted(rng.uniform(0, 100, 2))
        y1, y2 = sorted(rng.uniform(0, 100, 2))
        boxes.append(TeacherBox(int(rng.integers(0, 6)), (x1, y1, x2 + 1, y2 + 1), float(rng.random())))
    align, iou, score = match_phrases(boxes, 7, regions, 0.2)
    for p in range(7):
        mine = [b for b in boxes if b.phrase_index == p]
        for n in range(len(regions)):
            if not mine:
                assert iou[p, n] == 0 and align[p, n] == 0
                continue
            ious = [box_iou(np.array([b.box]), regions[n : n + 1])[0, 0] for b in mine]
            best = max(ious)
            assert iou[p, n] == pytest.approx(best, abs=1e-6)
            want = max(b.score for b, v in zip(mine, ious) if v == best) if best > 0 else 0.0
            assert score[p, n] == pytest.approx(want, abs=1e-6)
            assert align[p, n] == int(best >= 0.2)
