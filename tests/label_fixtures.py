"""A tiny hand-built grounded corpus for the label-pipeline tests (no dependency on the generator).

Images hold 2-3 coloured shapes; captions mention them in Flickr30k markup; region shards hold jittered
copies of the true boxes (class known) plus distractors. Edge cases are planted on purpose:
a malformed TSV row, a caption with no noun phrase, an image missing from the regions, an image whose
regions have no cls_prob (tag-similarity teacher fails), and a region image with no caption.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.manifest import write_manifest
from schemas.records import RegionRecord
from schemas.shards import REGION_PREFIX, encode_region, sample_key, shard_index, shard_name, write_shard

VOCAB = ["circle", "square", "triangle", "star,pentagram"]
COLOURS = ["red", "blue", "green", "yellow"]
W, H = 96, 80


def _objects(rng, n):
    out = []
    for _ in range(n):
        w, h = rng.integers(16, 40, size=2)
        x, y = rng.integers(0, W - w), rng.integers(0, H - h)
        out.append((int(rng.integers(0, 3)), COLOURS[int(rng.integers(0, 4))], np.array([x, y, x + w, y + h], np.float32)))
    return out


def _regions(rng, image_id, objects, with_cls=True):
    boxes, cls = [], []
    for c, _, b in objects:
        for _ in range(2):
            j = b + rng.normal(0, 1.5, 4).astype(np.float32)
            boxes.append(np.clip(j, 0, [W, H, W, H]))
            cls.append(c + 1)
    for _ in range(4):  # distractors
        x, y = rng.integers(0, W - 12), rng.integers(0, H - 12)
        boxes.append(np.array([x, y, x + 10, y + 10], np.float32))
        cls.append(4)  # "star": never mentioned
    boxes = np.stack(boxes).astype(np.float32)
    prob = np.full((len(cls), len(VOCAB) + 1), 0.02, np.float32)
    prob[np.arange(len(cls)), cls] = 0.9
    return RegionRecord(image_id, W, H, boxes, rng.normal(size=(len(cls), 8)).astype(np.float32), prob if with_cls else None)


def make_corpus(root: Path, num_images: int = 8, num_shards: int = 2, seed: int = 0) -> dict:
    """Write the corpus under ``root``; returns paths and the planted edge cases."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "objects_vocab.txt").write_text("\n".join(VOCAB) + "\n")
    sent_dir, ann_dir = root / "flickr30k" / "Sentences", root / "flickr30k" / "Annotations"
    sent_dir.mkdir(parents=True), ann_dir.mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(num_images)]
    missing, no_cls, no_caption = ids[1], ids[2], ids[3]
    rows, shards = [], {k: {} for k in range(num_shards)}
    for i, image_id in enumerate(ids):
        objs = _objects(rng, 2 + i % 2)
        if image_id != missing:
            rec = _regions(rng, image_id, objs, with_cls=image_id != no_cls)
            shards[shard_index(image_id, num_shards)][sample_key(image_id)] = encode_region(rec)
        xml = [f"<annotation><filename>{image_id}.png</filename><size><width>{W}</width><height>{H}</height><depth>3</depth></size>"]
        for e, (_, _, b) in enumerate(objs, start=1):
            x1, y1, x2, y2 = b[0] + 1, b[1] + 1, b[2], b[3]  # Flickr30k XML: 1-based inclusive
            xml.append(f"<object><name>{e}</name><bndbox><xmin>{x1:g}</xmin><ymin>{y1:g}</ymin><xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>")
        (ann_dir / f"{image_id}.xml").write_text("".join(xml) + "</annotation>\n")
        if image_id == no_caption:
            continue
        names = [f"a {col} {VOCAB[c].split(',')[0]}" for c, col, _ in objs]
        markups = [
            f"[/EN#1/other {names[0]}] to the left of [/EN#2/other {names[1]}]",
            f"[/EN#2/other {names[1]}] is next to [/EN#1/other {names[0]}]",
        ]
        if i == 0:
            markups.append("it is there")  # no noun phrase once pronouns are dropped
        sentences = []
        for m in markups:
            plain = m
            for e, name in enumerate(names, start=1):
                plain = plain.replace(f"[/EN#{e}/other {name}]", name)
            rows.append(f"{plain}\timages/{image_id}.png")
            sentences.append(m)
        (sent_dir / f"{image_id}.txt").write_text("\n".join(sentences) + "\n")
    rows.insert(3, "a row without a url")  # malformed: one column
    (root / "captions.tsv").write_text("\n".join(rows) + "\n")
    regions = root / "regions"
    for k, samples in shards.items():
        write_shard(regions / shard_name(REGION_PREFIX, k), samples)
    write_manifest(regions, {"fingerprint": f"fixture-{seed}-{num_images}", "num_shards": num_shards})
    return {
        "root": root,
        "captions": root / "captions.tsv",
        "regions": regions,
        "vocab": root / "objects_vocab.txt",
        "flickr30k": root / "flickr30k",
        "missing": missing,
        "no_cls": no_cls,
        "no_caption": no_caption,
        "num_rows": len(rows),
    }
