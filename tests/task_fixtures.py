"""Test helpers for the downstream tasks: the synthetic corpus's scenes as one region shard, and a tiny model config."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.synthetic.corpus import generate_image
from schemas.shards import encode_region, shard_name, write_shard


def write_scene_fixture(root: Path, num_images: int, seed: int, feature_dim: int, model: dict) -> tuple[Path, Path]:
    """The region shard of the corpus's first ``num_images`` scenes (the simulated detector, written as the
    regions stage writes samples) at ``root/regions``, and ``model`` as ``root/model.json``: ``(regions, model.json)``."""
    samples = {}
    for i in range(num_images):
        rec = generate_image(i, num_images, seed, feature_dim)[1].record
        samples[rec.image_id] = encode_region(rec)
    write_shard(root / "regions" / shard_name("regions", 0), samples)
    (root / "model.json").write_text(json.dumps(model))
    return root / "regions", root / "model.json"
