"""Referring-expression comprehension metrics (RefCOCO / RefCOCO+ protocol).

An expression is a *hit* when the top-scored proposal overlaps the ground-truth box with IoU ≥ 0.5.
MAttNet / ViLBERT-style codebases test ``IoU > 0.5`` instead; both are reported so numbers can be set
beside either (they differ only when a proposal's IoU is exactly 0.5). The *oracle upper bound* is
the share of expressions for which any proposal reaches the threshold: no ranking of those
proposals can score higher. All IoUs come from :func:`schemas.boxes.box_iou` (xyxy, exclusive end).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.boxes import box_iou

HIT_IOU = 0.5


def top1_iou(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU of each expression's predicted box with its ground truth: ``[E, 4] x [E, 4] -> [E]``."""
    pred, gt = np.asarray(pred_boxes, np.float32), np.asarray(gt_boxes, np.float32)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted boxes {pred.shape} and ground-truth boxes {gt.shape} differ in shape")
    if pred.size == 0:
        return np.zeros(0, np.float32)
    return np.array([box_iou(p[None], g[None])[0, 0] for p, g in zip(pred, gt)], dtype=np.float32)


def hits(ious: np.ndarray, threshold: float = HIT_IOU, strict: bool = False) -> np.ndarray:
    """bool ``[E]``: IoU ≥ threshold (``strict=False``, this project's default) or IoU > threshold."""
    ious = np.asarray(ious, np.float32)
    return ious > threshold if strict else ious >= threshold


def best_proposal_iou(proposals: Sequence[np.ndarray], gt_boxes: np.ndarray) -> np.ndarray:
    """Per expression, the highest IoU any of its proposals reaches with its ground-truth box."""
    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    if len(proposals) != len(gt):
        raise ValueError(f"{len(proposals)} proposal sets for {len(gt)} ground-truth boxes")
    return np.array([box_iou(p, g[None]).max() if len(p) else 0.0 for p, g in zip(proposals, gt)], dtype=np.float32)


def rec_accuracy(pred_boxes: np.ndarray, gt_boxes: np.ndarray, proposals: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """``acc`` (IoU ≥ 0.5), ``acc_strict`` (IoU > 0.5), ``n``, and with proposals the oracle bounds."""
    ious = top1_iou(pred_boxes, gt_boxes)
    n = int(ious.size)
    out = {
        "n": n,
        "acc": float(hits(ious).mean()) if n else float("nan"),
        "acc_strict": float(hits(ious, strict=True).mean()) if n else float("nan"),
    }
    if proposals is not None:
        best = best_proposal_iou(proposals, gt_boxes)
        out["oracle"] = float(hits(best).mean()) if n else float("nan")
        out["oracle_strict"] = float(hits(best, strict=True).mean()) if n else float("nan")
    return out
