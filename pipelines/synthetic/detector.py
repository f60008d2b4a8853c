"""A simulated bottom-up-attention detector for synthetic scenes.

Proposals are jittered true boxes plus distractors (parts of shapes, unions of two shapes, enlarged
context boxes, random boxes). Each proposal's feature is computed *from the pixels inside its box*:
foreground mean colour, whole-box mean colour, fill ratio, a 4x4 occupancy grid, centroid offset,
aspect ratio and relative size, plus noise, then a fixed seeded random projection to ``D`` dims. So
colour and shape are recoverable from features but noisy, as with a real detector's pooled features.
The class distribution (``cls_prob``) is over the shape vocabulary with background at index 0: it
knows shape (with some confusion) but not colour. LXMERT-style ``attrs_id`` name the nearest colour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.boxes import box_iou
from schemas.records import RegionRecord
from pipelines.synthetic.scene import COLOURS, SHAPES, Scene

DESCRIPTOR_DIM = 27
PROJECTION_SEED = 20240611  # fixed: features mean the same thing in every corpus of a given D
BOXES_PER_IMAGE = (10, 36)
FOREGROUND_THRESHOLD = 40  # max |pixel - background| over channels that counts as a shape pixel
COLOUR_WEIGHT = 3.0  # foreground colour carries about as much variance as the 16-cell shape grid
# Attribute vocabulary of the simulated attribute head (LXMERT ``attrs_id`` index into it).
ATTRIBUTES = (*COLOURS, "gray", "small", "medium", "large")


@dataclass
class Detections:
    record: RegionRecord  # boxes xyxy exclusive, features float32, cls_prob float32
    objects_id: np.ndarray  # int64 [N] argmax non-background class (0-based into objects_vocab)
    objects_conf: np.ndarray  # float32 [N]
    attrs_id: np.ndarray  # int64 [N] index into ATTRIBUTES
    attrs_conf: np.ndarray  # float32 [N]
    matched_object: np.ndarray  # int64 [N] scene object a proposal was drawn from; -1 for unions and random boxes


def projection(feature_dim: int) -> np.ndarray:
    rng = np.random.default_rng([PROJECTION_SEED, feature_dim])
    return (rng.standard_normal((DESCRIPTOR_DIM, feature_dim)) / np.sqrt(DESCRIPTOR_DIM)).astype(np.float64)


def _clip(box: np.ndarray, w: int, h: int) -> np.ndarray:
    """Keep a proposal inside the image with at least 2 px of width and height."""
    x1 = float(np.clip(box[0], 0, w - 2))
    y1 = float(np.clip(box[1], 0, h - 2))
    x2 = float(np.clip(box[2], x1 + 2, w))
    y2 = float(np.clip(box[3], y1 + 2, h))
    return np.array([x1, y1, x2, y2], dtype=np.float32)


def propose(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Proposal boxes (float32 xyxy exclusive) and the object each came from (-1: none)."""
    w, h = scene.width, scene.height
    boxes, source = [], []
    for i, o in enumerate(scene.objects):
        bw, bh = o.box[2] - o.box[0], o.box[3] - o.box[1]
        for k in range(int(rng.integers(1, 4))):
            sigma = 0.04 if k == 0 else 0.12
            boxes.append(_clip(o.box + rng.normal(0, sigma, 4) * [bw, bh, bw, bh], w, h))
            source.append(i)
    n_total = int(rng.integers(BOXES_PER_IMAGE[0], BOXES_PER_IMAGE[1] + 1))
    while len(boxes) < n_total:
        kind = rng.choice(["part", "union", "context", "random"], p=[0.3, 0.15, 0.15, 0.4])
        i = int(rng.integers(len(scene.objects)))
        b = scene.objects[i].box.astype(np.float64)
        bw, bh = b[2] - b[0], b[3] - b[1]
        if kind == "part":  # a half or a quarter of a shape
            fx, fy = [(0.5, 1.0), (1.0, 0.5), (0.5, 0.5)][int(rng.integers(3))]
            ox, oy = rng.choice([0.0, 1 - fx]) * bw, rng.choice([0.0, 1 - fy]) * bh
            box = np.array([b[0] + ox, b[1] + oy, b[0] + ox + fx * bw, b[1] + oy + fy * bh])
        elif kind == "union" and len(scene.objects) > 1:
            j = int(rng.choice([k for k in range(len(scene.objects)) if k != i]))
            c = scene.objects[j].box
            box = np.array([min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])], dtype=np.float64)
            i = -1
        elif kind == "context":
            s = rng.uniform(1.6, 2.2)
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            box = np.array([cx - s * bw / 2, cy - s * bh / 2, cx + s * bw / 2, cy + s * bh / 2])
        else:
            side = rng.uniform(8, 0.6 * min(w, h), 2)
            x1, y1 = rng.uniform(0, w - side[0]), rng.uniform(0, h - side[1])
            box = np.array([x1, y1, x1 + side[0], y1 + side[1]])
            i = -1
        boxes.append(_clip(box + rng.normal(0, 1.0, 4), w, h))
        source.append(i)
    order = rng.permutation(len(boxes))
    return np.stack(boxes)[order], np.asarray(source, dtype=np.int64)[order]


def _background(pixels: np.ndarray) -> np.ndarray:
    """The background colour, estimated from the image border (shapes never touch it)."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def describe(pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per-box descriptor [N, 27] from the pixels inside each box (no ground truth used).

    Vectorised over boxes: sums inside a box come from summed-area tables, the occupancy grid from
    8x8 point samples per box averaged to 4x4 (defined even for tiny boxes).
    """
    h, w = pixels.shape[:2]
    px = pixels.transpose(2, 0, 1).astype(np.float64) / 255.0  # channels first: contiguous planes
    fg = (np.abs(pixels.astype(np.int16) - _background(pixels).astype(np.int16)).max(axis=2) > FOREGROUND_THRESHOLD).astype(np.float64)
    # Planes: fg, fg*rgb (3), rgb (3), fg*x, fg*y; their summed-area table, zero-padded on top/left.
    sat = np.zeros((9, h + 1, w + 1))
    sat[0, 1:, 1:] = fg
    sat[1:4, 1:, 1:] = fg * px
    sat[4:7, 1:, 1:] = px
    sat[7, 1:, 1:] = fg * np.arange(w)[None, :]
    sat[8, 1:, 1:] = fg * np.arange(h)[:, None]
    np.cumsum(sat, axis=1, out=sat)
    np.cumsum(sat, axis=2, out=sat)
    sat = sat.transpose(1, 2, 0)

    b = np.asarray(boxes, dtype=np.float64)
    x1 = np.floor(b[:, 0]).astype(int)
    y1 = np.floor(b[:, 1]).astype(int)
    x2 = np.maximum(np.ceil(b[:, 2]).astype(int), x1 + 1)
    y2 = np.maximum(np.ceil(b[:, 3]).astype(int), y1 + 1)
    sums = sat[y2, x2] - sat[y1, x2] - sat[y2, x1] + sat[y1, x1]  # [N, 9]
    cw, ch = (x2 - x1).astype(np.float64), (y2 - y1).astype(np.float64)
    count = sums[:, 0]
    has = count > 0
    safe = np.where(has, count, 1.0)
    fg_colour = np.where(has[:, None], sums[:, 1:4] / safe[:, None], 0.0)
    mean_colour = sums[:, 4:7] / (cw * ch)[:, None]
    centroid = np.where(
        has[:, None],
        np.stack([(sums[:, 7] / safe - x1 + 0.5) / cw - 0.5, (sums[:, 8] / safe - y1 + 0.5) / ch - 0.5], axis=1),
        0.0,
    )
    steps = (np.arange(8) + 0.5) / 8
    ys = y1[:, None] + (steps[None] * ch[:, None]).astype(int)  # [N, 8]
    xs = x1[:, None] + (steps[None] * cw[:, None]).astype(int)
    grid = fg[ys[:, :, None], xs[:, None, :]].reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16)
    geometry = np.stack([np.log((b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1])), np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (w * h))], axis=1)
    return np.concatenate([COLOUR_WEIGHT * fg_colour, mean_colour, (count / (cw * ch))[:, None], grid, centroid, geometry], axis=1)


def _class_logits(iou_best: float, shape: int, rng: np.random.Generator) -> np.ndarray:
    c = len(SHAPES) + 1
    logits = rng.normal(0.0, 0.3, c)
    logits[0] += 4.0 * (1.0 - iou_best)
    if shape >= 0:
        logits[1 + shape] += 5.0 * iou_best
        if rng.random() < 0.2:  # a confusable shape (a diamond seen as a square, a star as a triangle)
            other = int(rng.choice([k for k in range(len(SHAPES)) if k != shape]))
            logits[1 + other] += 5.0 * iou_best * rng.uniform(0.5, 1.0)
    return logits


def detect(scene: Scene, rng: np.random.Generator, feature_dim: int, proj: np.ndarray | None = None) -> Detections:
    """Run the simulated detector on a scene."""
    boxes, source = propose(scene, rng)
    desc = describe(scene.pixels, boxes)
    desc += rng.normal(0.0, 0.03, desc.shape)
    proj = projection(feature_dim) if proj is None else proj
    features = (desc @ proj + rng.normal(0.0, 0.02, (len(boxes), feature_dim))).astype(np.float32)

    iou = box_iou(boxes, scene.gt_boxes())  # [N, objects]
    best = iou.argmax(axis=1)
    logits = np.stack(
        [_class_logits(float(iou[n, best[n]]), SHAPES.index(scene.objects[best[n]].shape) if iou[n, best[n]] > 0 else -1, rng) for n in range(len(boxes))]
    )
    cls_prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    cls_prob = (cls_prob / cls_prob.sum(axis=1, keepdims=True)).astype(np.float32)

    # Attribute head: nearest palette colour of the foreground (gray when the box holds no shape).
    palette = np.array(list(COLOURS.values()), dtype=np.float64) / 255.0
    dist = np.linalg.norm(desc[:, None, :3] / COLOUR_WEIGHT - palette[None], axis=2)
    has_fg = desc[:, 6] > 0.05
    attrs_id = np.where(has_fg, dist.argmin(axis=1), ATTRIBUTES.index("gray")).astype(np.int64)
    attrs_conf = np.where(has_fg, np.exp(-4.0 * dist.min(axis=1)), 1.0 - desc[:, 6]).astype(np.float32)

    rec = RegionRecord(scene.image_id, scene.width, scene.height, boxes, features, cls_prob)
    return Detections(
        record=rec,
        objects_id=cls_prob[:, 1:].argmax(axis=1).astype(np.int64),
        objects_conf=cls_prob[:, 1:].max(axis=1).astype(np.float32),
        attrs_id=attrs_id,
        attrs_conf=attrs_conf,
        matched_object=source,
    )
