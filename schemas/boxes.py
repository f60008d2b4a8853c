"""Box conventions and IoU.

Inside ssga every box is float32 ``xyxy`` in pixels with an *exclusive* end (torchvision / COCO
convention: width = x2 - x1). Readers convert at the edge; these helpers are the only place where
conversions happen, so a convention bug has one home.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "inclusive_to_exclusive",
    "exclusive_to_inclusive",
    "box_area",
    "box_iou",
    "box_problem",
]


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {b.shape}")
    return b


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` → ``[x1, y1, x2, y2]`` (exclusive end)."""
    b = _as_boxes(boxes).copy()
    b[:, 2:] += b[:, :2]
    return b


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[x1, y1, x2, y2]`` (exclusive end) → COCO ``[x, y, w, h]``."""
    b = _as_boxes(boxes).copy()
    b[:, 2:] -= b[:, :2]
    return b


def inclusive_to_exclusive(boxes: np.ndarray) -> np.ndarray:
    """py-faster-rcnn / BUTD boxes hold inclusive pixel indices (w = x2 - x1 + 1): add 1 to the end."""
    b = _as_boxes(boxes).copy()
    b[:, 2:] += 1.0
    return b


def exclusive_to_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`inclusive_to_exclusive`, for writing BUTD-style files."""
    b = _as_boxes(boxes).copy()
    b[:, 2:] -= 1.0
    return b


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of ``xyxy`` boxes; negative extents count as zero."""
    b = _as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` boxes: ``[N, 4] x [M, 4] -> [N, M]`` float32, vectorised.

    Matches ``torchvision.ops.box_iou`` (and ``pycocotools.mask.iou`` on xywh, iscrowd=0).
    Pairs whose union is zero get IoU 0.
    """
    a = _as_boxes(a).astype(np.float64)
    b = _as_boxes(b).astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2]
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None].astype(np.float64) + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def box_problem(boxes: np.ndarray, image_w: float, image_h: float, tol: float = 1.0) -> str | None:
    """Why these ``xyxy`` boxes are unusable for an image of this size, or ``None`` if they are fine.

    ``tol`` pixels of overshoot are allowed, since detectors clip to ``W - 1`` in inclusive
    coordinates (``W`` once converted) and float round-off can add a hair.
    """
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        return f"boxes have shape {tuple(b.shape)}, expected [N, 4]"
    if not np.all(np.isfinite(b)):
        return "boxes contain NaN or Inf"
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    bad = np.flatnonzero((w <= 0) | (h <= 0))
    if bad.size:
        return f"zero-area or inverted box at index {int(bad[0])}: {b[bad[0]].tolist()}"
    out = np.flatnonzero(
        (b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > image_w + tol) | (b[:, 3] > image_h + tol)
    )
    if out.size:
        return (
            f"box at index {int(out[0])} {b[out[0]].tolist()} lies outside the "
            f"{image_w:g}x{image_h:g} image"
        )
    return None
