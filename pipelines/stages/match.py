"""The ``match`` step: teacher boxes of each phrase against detector regions, by IoU (vectorised numpy).

For phrase ``p`` and region ``n``: ``iou[p, n]`` is the highest IoU of any of ``p``'s teacher boxes with
``n``; ``score[p, n]`` the teacher confidence of that box (the highest one among ties; 0 without overlap); ``align[p, n]``
is ``iou >= threshold`` (inclusive, as the paper states). A phrase without teacher boxes is all zero.
"""
from __future__ import annotations

import numpy as np

from schemas.boxes import box_iou
from schemas.records import TeacherBox

DEFAULT_IOU_THRESHOLD = 0.5


def check_threshold(threshold: float) -> float:
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"IoU threshold must lie in (0, 1], got {threshold}")
    return float(threshold)


def match_phrases(
    boxes: list[TeacherBox], num_phrases: int, regions: np.ndarray, threshold: float = DEFAULT_IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(align uint8 [P, N], iou float32 [P, N], score float32 [P, N])`` for one caption."""
    check_threshold(threshold)
    regions = np.asarray(regions, np.float32).reshape(-1, 4)
    n = regions.shape[0]
    iou = np.zeros((num_phrases, n), np.float32)
    score = np.zeros((num_phrases, n), np.float32)
    if not boxes or num_phrases == 0 or n == 0:
        return np.zeros((num_phrases, n), np.uint8), iou, score
    tb = np.asarray([b.box for b in boxes], np.float32)  # [T, 4]
    owner = np.asarray([b.phrase_index for b in boxes], np.int64)  # [T]
    conf = np.asarray([b.score for b in boxes], np.float32)  # [T]
    pair = box_iou(tb, regions)  # [T, N]
    mine = owner[None, :] == np.arange(num_phrases)[:, None]  # [P, T]
    per = np.where(mine[:, :, None], pair[None, :, :], -1.0)  # [P, T, N]; -1 marks "not this phrase's box"
    best = per.max(axis=1)  # [P, N]
    has_box = mine.any(axis=1)  # [P]
    tied = (per == best[:, None, :]) & mine[:, :, None]
    score = np.where(tied, conf[None, :, None], -np.inf).max(axis=1)
    iou = np.where(has_box[:, None], best, 0.0).astype(np.float32)
    # No overlap means no box "gives" the IoU: confidence 0, so soft targets stay 0 off the boxes.
    score = np.where(has_box[:, None] & (best > 0), score, 0.0).astype(np.float32)
    align = (has_box[:, None] & (iou >= threshold)).astype(np.uint8)
    return align, iou, score
