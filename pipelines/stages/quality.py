"""Pseudo-label quality against ground truth: precision and recall of ``M``.

A region is a true positive for a phrase when its IoU with a ground-truth box of the phrase's entity
(found by character-span overlap with the Flickr30k markup) is at least 0.5. Phrases without ground
truth are left out of both precision and recall, and counted.
"""
from __future__ import annotations

import numpy as np

from pipelines.formats.flickr30k import Flickr30kError, Flickr30kGroundTruth
from pipelines.teachers.oracle import caption_index
from schemas.boxes import box_iou
from schemas.records import ImageLabels

GT_IOU = 0.5


def gt_alignment(labels: ImageLabels, regions: np.ndarray, gt: Flickr30kGroundTruth) -> tuple[np.ndarray, np.ndarray]:
    """``(gt_align bool [P, N], has_gt bool [P])`` for one image's stacked phrases."""
    p_total = labels.num_phrases
    gt_align = np.zeros((p_total, labels.num_boxes), bool)
    has_gt = np.zeros(p_total, bool)
    if p_total == 0:
        return gt_align, has_gt
    try:
        sentences, boxes = gt.image(labels.image_id)
    except Flickr30kError:
        return gt_align, has_gt  # no ground truth for this image: nothing to score
    row = 0
    for cap in labels.captions:
        spans = [(p["start"], p["end"]) for p in cap["phrases"]]
        for i, b in enumerate(gt.phrase_boxes(cap["text"], caption_index(cap["caption_id"]), spans, sentences, boxes)):
            if b is not None:
                has_gt[row + i] = True
                gt_align[row + i] = (box_iou(b, regions) >= GT_IOU).any(axis=0)
        row += len(spans)
    return gt_align, has_gt


def quality_counts(align: np.ndarray, gt_align: np.ndarray, has_gt: np.ndarray) -> dict[str, int]:
    a, g = align[has_gt].astype(bool), gt_align[has_gt]
    return {
        "tp": int((a & g).sum()),
        "fp": int((a & ~g).sum()),
        "fn": int((~a & g).sum()),
        "phrases_with_gt": int(has_gt.sum()),
        "phrases_without_gt": int((~has_gt).sum()),
    }


def precision_recall(counts: dict[str, int]) -> dict[str, float | None]:
    tp, fp, fn = counts.get("tp", 0), counts.get("fp", 0), counts.get("fn", 0)
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p and r else None
    return {"precision": p, "recall": r, "f1": f1}
