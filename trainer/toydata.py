"""A tiny grounded corpus in the real shard formats, for smoke tests and benchmarks of the trainer.

Every image has a few regions of known object classes; its captions name objects ("a dog near
the red ball"), and ``align[p, r] = 1`` exactly when region ``r`` shows phrase ``p``'s object. Region
features carry a fixed per-class direction plus noise, so the alignment is learnable (separable)
from features and words alone. The label pipelines write the real thing; this module exists so
the trainer can be tested without importing them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.records import ImageLabels, RegionRecord
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, encode_labels, encode_region, sample_key, shard_index, shard_name, write_shard

OBJECTS = ["dog", "cat", "car", "tree", "ball", "horse", "bird", "boat"]
ADJECTIVES = ["red", "small", "old", "big", "white"]
NUM_CLASSES = len(OBJECTS) + 1  # class 0 is the detector's background


def class_directions(feat_dim: int, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(OBJECTS), feat_dim)).astype(np.float32)


def make_image(i: int, rng: np.random.Generator, num_regions: int, feat_dim: int, directions: np.ndarray, num_captions: int,
               num_classes: int = NUM_CLASSES):
    image_id = f"img{i:05d}"
    w, h = int(rng.integers(200, 640)), int(rng.integers(200, 480))
    classes = rng.integers(0, len(OBJECTS), num_regions)
    x1 = rng.uniform(0, w * 0.6, num_regions)
    y1 = rng.uniform(0, h * 0.6, num_regions)
    boxes = np.stack([x1, y1, x1 + rng.uniform(10, w * 0.4, num_regions), y1 + rng.uniform(10, h * 0.4, num_regions)], 1)
    feats = directions[classes] + 0.3 * rng.normal(size=(num_regions, feat_dim))
    # Classes past the toy objects (num_classes > NUM_CLASSES: a detector's 1,601, for realistic sizes) are noise.
    logits = 4.0 * np.eye(num_classes)[classes + 1] + 0.5 * rng.normal(size=(num_regions, num_classes))
    cls = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    region = RegionRecord(image_id, w, h, boxes.astype(np.float32), feats.astype(np.float32), cls.astype(np.float32))

    captions, rows = [], []
    for c in range(num_captions):
        present = OBJECTS[classes[rng.integers(num_regions)]]
        absent = [o for o in OBJECTS if o not in {OBJECTS[k] for k in classes}]
        second = absent[rng.integers(len(absent))] if absent and rng.random() < 0.5 else OBJECTS[classes[rng.integers(num_regions)]]
        p1 = f"a {present}"
        p2 = f"the {ADJECTIVES[rng.integers(len(ADJECTIVES))]} {second}"
        text = f"{p1} near {p2}"
        phrases = [{"text": p1, "start": 0, "end": len(p1)}, {"text": p2, "start": len(p1) + 6, "end": len(text)}]
        captions.append({"caption_id": f"{image_id}_c{c}", "text": text, "phrases": phrases})
        for word in (present, second):
            rows.append(classes == OBJECTS.index(word))
    align = np.array(rows, dtype=np.uint8).reshape(-1, num_regions)
    iou = np.where(align, rng.uniform(0.55, 0.95, align.shape), rng.uniform(0.0, 0.45, align.shape))
    score = np.where(align, rng.uniform(0.5, 1.0, align.shape), rng.uniform(0.0, 0.6, align.shape))
    labels = ImageLabels(image_id, num_regions, 0.5, captions, align, iou.astype(np.float16), score.astype(np.float16), "toy-teacher")
    return region, labels


def write_corpus(
    root: str | Path,
    num_images: int = 32,
    num_shards: int = 2,
    num_regions: int = 6,
    feat_dim: int = 16,
    seed: int = 0,
    no_caption_every: int = 9,
    num_classes: int = NUM_CLASSES,
) -> tuple[Path, Path]:
    """Write ``root/regions`` and ``root/labels`` shard directories; returns both paths."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    directions = class_directions(feat_dim)
    regions: dict[int, dict] = {k: {} for k in range(num_shards)}
    labels: dict[int, dict] = {k: {} for k in range(num_shards)}
    for i in range(num_images):
        num_captions = 0 if no_caption_every and i % no_caption_every == no_caption_every - 1 else int(rng.integers(1, 3))
        region, lab = make_image(i, rng, num_regions, feat_dim, directions, num_captions, num_classes)
        k = shard_index(region.image_id, num_shards)
        regions[k][sample_key(region.image_id)] = encode_region(region)
        labels[k][sample_key(region.image_id)] = encode_labels(lab)
    for k in range(num_shards):
        write_shard(root / "regions" / shard_name(REGION_PREFIX, k), regions[k])
        write_shard(root / "labels" / shard_name(LABEL_PREFIX, k), labels[k])
    return root / "regions", root / "labels"


def main(argv: list[str] | None = None) -> None:
    """``python -m trainer.toydata --out data/toy`` writes ``data/toy/regions`` and ``data/toy/labels``."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--num-shards", type=int, default=4)
    p.add_argument("--num-regions", type=int, default=10)
    p.add_argument("--feat-dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    regions, labels = write_corpus(a.out, a.num_images, a.num_shards, a.num_regions, a.feat_dim, a.seed)
    print(f"wrote {regions} and {labels}")


if __name__ == "__main__":
    main()
