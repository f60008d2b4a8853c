"""Scenes of the synthetic corpus: which coloured shapes, where, and their pixels.

A scene holds 2-5 non-overlapping shapes. Besides random shapes it deliberately adds *twins*
(the same shape as an object already placed) so that telling them apart needs colour (a red and a
blue circle), size (a small and a large square) or position (two identical triangles). That is what
makes referring expressions in this corpus need colour, size and spatial relations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star")
# objects_vocab.txt lines: BUTD style, a line may list synonyms; the first is the class name.
SHAPE_VOCAB_LINES = ("circle,disc", "square", "triangle", "diamond,rhombus", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 170),
    "orange": (245, 135, 25),
}
# Side of a shape's square frame as a fraction of min(W, H).
SIZES: dict[str, tuple[float, float]] = {"small": (0.13, 0.17), "medium": (0.22, 0.26), "large": (0.31, 0.36)}
IMAGE_SIDE = (160, 224)  # width and height drawn independently from this range (inclusive)
MARGIN = 3  # pixels kept free between shape frames, so masks never touch


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    frame: tuple[int, int, int]  # x0, y0, side of the square the shape is drawn in
    box: np.ndarray | None = None  # float32 xyxy exclusive: tight box of the drawn pixels
    area: int = 0  # drawn pixels

    @property
    def centre(self) -> tuple[float, float]:
        assert self.box is not None
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2


@dataclass
class Scene:
    image_id: str
    width: int
    height: int
    background: tuple[int, int, int]
    objects: list[SceneObject]
    pixels: np.ndarray  # uint8 [H, W, 3]

    def gt_boxes(self) -> np.ndarray:
        return np.stack([o.box for o in self.objects]).astype(np.float32)


def _plan_objects(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(shape, colour, size) of each object, with same-shape twins on purpose."""
    n = int(rng.choice([2, 3, 4, 5], p=[0.2, 0.35, 0.3, 0.15]))
    planned: list[tuple[str, str, str]] = []
    colours, sizes = list(COLOURS), list(SIZES)
    while len(planned) < n:
        if planned and rng.random() < 0.5:
            shape, colour, size = planned[int(rng.integers(len(planned)))]
            kind = rng.choice(["colour", "size", "identical"], p=[0.45, 0.35, 0.2])
            if kind == "colour":
                colour = str(rng.choice([c for c in colours if c != colour]))
            elif kind == "size":
                size = str(rng.choice([s for s in sizes if s != size]))
            # At most two identical objects, so "the left one" always names exactly one of them.
            if planned.count((shape, colour, size)) >= 2:
                continue
        else:
            shape, colour, size = str(rng.choice(SHAPES)), str(rng.choice(colours)), str(rng.choice(sizes))
            if (shape, colour, size) in planned:
                continue
        planned.append((shape, colour, size))
    return planned


def _place(rng: np.random.Generator, side: int, w: int, h: int, frames: list[tuple[int, int, int]]) -> tuple[int, int, int] | None:
    for _ in range(60):
        x0 = int(rng.integers(1, w - side - 1))
        y0 = int(rng.integers(1, h - side - 1))
        if all(
            x0 + side + MARGIN <= fx or fx + fs + MARGIN <= x0 or y0 + side + MARGIN <= fy or fy + fs + MARGIN <= y0
            for fx, fy, fs in frames
        ):
            return x0, y0, side
    return None


def _polygon(shape: str, x0: int, y0: int, s: int) -> list[tuple[float, float]]:
    e = s - 1
    cx, cy = x0 + e / 2, y0 + e / 2
    if shape == "triangle":
        return [(cx, y0), (x0 + e, y0 + e), (x0, y0 + e)]
    if shape == "diamond":
        return [(cx, y0), (x0 + e, cy), (cx, y0 + e), (x0, cy)]
    if shape == "star":
        r_out, r_in = e / 2, e / 2 * 0.45
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return pts
    raise ValueError(f"not a polygon shape: {shape}")


def draw_scene(image_id: str, rng: np.random.Generator) -> Scene:
    """Plan, place and draw one scene. Objects that do not fit are dropped (at least one always fits)."""
    w = int(rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1))
    h = int(rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1))
    grey = int(rng.integers(200, 236))
    background = (grey + int(rng.integers(-8, 9)), grey, grey + int(rng.integers(-8, 9)))
    img = Image.new("RGB", (w, h), background)
    labels = Image.new("L", (w, h), 0)
    draw, ldraw = ImageDraw.Draw(img), ImageDraw.Draw(labels)
    objects: list[SceneObject] = []
    for shape, colour, size in _plan_objects(rng):
        lo, hi = SIZES[size]
        side = int(round(rng.uniform(lo, hi) * min(w, h)))
        frame = _place(rng, side, w, h, [o.frame for o in objects])
        if frame is None:
            continue
        x0, y0, s = frame
        label = len(objects) + 1
        if shape == "circle":
            draw.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=COLOURS[colour])
            ldraw.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=label)
        elif shape == "square":
            draw.rectangle([x0, y0, x0 + s - 1, y0 + s - 1], fill=COLOURS[colour])
            ldraw.rectangle([x0, y0, x0 + s - 1, y0 + s - 1], fill=label)
        else:
            draw.polygon(_polygon(shape, x0, y0, s), fill=COLOURS[colour])
            ldraw.polygon(_polygon(shape, x0, y0, s), fill=label)
        objects.append(SceneObject(shape, colour, size, frame))
    lab = np.asarray(labels)
    for i, o in enumerate(objects):
        ys, xs = np.nonzero(lab == i + 1)
        o.box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        o.area = int(xs.size)
    return Scene(image_id, w, h, background, objects, np.asarray(img).copy())


def spatial_relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` lies relative to ``b``, along the axis that separates their centres most."""
    (ax, ay), (bx, by) = a.centre, b.centre
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"
