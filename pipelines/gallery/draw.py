"""Drawing for the pseudo-label gallery: one phrase panel (regions, ground truth, matches, teacher) and the loss plot.

Panel draw order, bottom to top: every detector region (thin grey) → the phrase's ground-truth boxes
(blue, drawn just outside the box) → the regions the labels matched to the phrase (thick; green where the region hits the ground
truth, red where it does not, purple where the phrase has no ground truth to judge by) → the
teacher's boxes (dashed orange, with their scores). The teacher goes last because its box usually
coincides with the region it matched, and must not disappear under it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GREY = (150, 150, 150)
BLUE = (30, 110, 255)  # ground truth
GREEN = (0, 200, 0)  # matched region, right (IoU >= 0.5 with a ground-truth box of the phrase)
RED = (230, 0, 0)  # matched region, wrong
PURPLE = (170, 60, 220)  # matched region of a phrase without ground truth
ORANGE = (255, 140, 0)  # teacher box
GT_WIDTH = 2
SCALE = 2  # the synthetic images are small; boxes are hard to read at 1x
LOSS_TERMS = ("loss", "word", "img", "align", "gnd")

Box = Sequence[float]


def scaled(box: Box, scale: int) -> tuple[float, float, float, float]:
    """An exclusive-end ``xyxy`` box in panel pixels: the last pixel inside is ``x2 - 1``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1


def dashed_rect(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], colour, width: int = 2, dash: int = 6) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):  # every other segment: a dash, then a gap
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)], fill=colour, width=width)


def region_verdicts(matched: np.ndarray, gt_hit: np.ndarray | None) -> dict[str, np.ndarray]:
    """Indices of matched regions that are ``right``/``wrong`` against the ground truth (``unjudged``
    when the phrase has none), and of ``missed`` regions: on the ground truth but not matched."""
    m = np.asarray(matched).astype(bool)
    if gt_hit is None:
        return {"right": np.zeros(0, int), "wrong": np.zeros(0, int), "unjudged": np.flatnonzero(m), "missed": np.zeros(0, int)}
    g = np.asarray(gt_hit).astype(bool)
    return {"right": np.flatnonzero(m & g), "wrong": np.flatnonzero(m & ~g), "unjudged": np.zeros(0, int), "missed": np.flatnonzero(~m & g)}


def draw_phrase(
    image: Image.Image,
    regions: np.ndarray,
    teacher_boxes: Sequence[Box],
    matched: np.ndarray,
    scale: int = SCALE,
    gt_boxes: np.ndarray | None = None,
    gt_hit: np.ndarray | None = None,
    teacher_scores: Sequence[float] | None = None,
) -> Image.Image:
    """One panel for one phrase (see the module docstring for colours and order).

    ``matched`` and ``gt_hit`` are per region: the label's ``align`` row, and whether the region has
    IoU >= 0.5 with a ground-truth box of the phrase (``None``: the phrase has no ground truth).
    """
    img = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for b in regions:
        draw.rectangle(scaled(b, scale), outline=GREY, width=1)
    for b in gt_boxes if gt_boxes is not None else ():  # just outside the box: a matched region on it stays visible
        x1, y1, x2, y2 = scaled(b, scale)
        draw.rectangle((x1 - GT_WIDTH, y1 - GT_WIDTH, x2 + GT_WIDTH, y2 + GT_WIDTH), outline=BLUE, width=GT_WIDTH)
    verdicts = region_verdicts(matched, gt_hit)
    for kind, colour in (("unjudged", PURPLE), ("right", GREEN), ("wrong", RED)):  # errors on top: they are what one looks for
        for i in verdicts[kind]:
            draw.rectangle(scaled(regions[i], scale), outline=colour, width=3)
    font = ImageFont.load_default(size=8 * scale)
    for k, b in enumerate(teacher_boxes):  # on top: a teacher box often coincides with the region it matched
        box = scaled(b, scale)
        dashed_rect(draw, box, ORANGE, width=2)
        if teacher_scores is not None:
            x, y = max(0.0, box[0]) + 3, max(0.0, box[1]) + 3
            text = f"{teacher_scores[k]:.2f}"
            draw.rectangle(draw.textbbox((x, y), text, font=font), fill=(0, 0, 0))
            draw.text((x, y), text, fill=ORANGE, font=font)
    return img


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` steps (shorter at the start, so nothing is dropped)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) == 0:
        return v
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_losses(losses_jsonl: Path, out_png: Path, title: str = "") -> bool:
    """Loss curves (one panel per term: raw, faint, and a moving average) from the trainer's ``losses.jsonl``.

    Returns False when there is no loss record.
    """
    if not losses_jsonl.exists():
        return False
    rows = [json.loads(line) for line in losses_jsonl.read_text().splitlines() if line.strip()]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = [t for t in LOSS_TERMS if t in rows[0]]
    window = min(50, max(1, len(rows) // 10))
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3.0), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, t in zip(axes[0], terms):
        values = [r[t] for r in rows]
        ax.plot(steps, values, lw=0.8, alpha=0.3, color="C0", label="per step")
        ax.plot(steps, smooth(values, window), lw=1.5, color="C0", label=f"mean of {window}")
        ax.set_title(t)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return True
