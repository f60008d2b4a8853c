"""Region features for fine-tuning tasks: the image ids of a region shard directory, the region
records of just the images a task needs, and the encoder inputs every task batches the same way.

Shards are streamed one sample at a time (:func:`schemas.shards.iter_regions`); only the images a
task names are kept, cut to the first ``max_regions`` boxes as pre-training does, so memory grows
with the task's images, not with the directory.
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schemas.records import RegionRecord, region_problem
from schemas.shards import REGION_PREFIX, ShardError, iter_regions, iter_shard, load_json
from schemas.discovery import list_shards, shard_dir


class RegionError(ValueError):
    """A region shard directory that cannot be used; the message names the shard, sample and reason."""


def region_shards(regions_dir: str | Path) -> list[str]:
    """The ``regions-NNNNNN.tar`` shards a user named (:func:`schemas.discovery.shard_dir`: the directory, its
    ``regions/`` subdirectory, or the output a CURRENT pointer names)."""
    try:
        return list_shards(shard_dir(regions_dir, REGION_PREFIX), REGION_PREFIX)
    except FileNotFoundError as e:
        raise RegionError(str(e)) from e


def region_image_ids(regions_dir: str | Path) -> list[str]:
    """The ``image_id`` of every region sample (read from the json members; features are not decoded)."""
    try:
        return [str(load_json(m["json"], f"{p}:{k}")["image_id"]) for p in region_shards(regions_dir) for k, m in iter_shard(p) if "json" in m]
    except ShardError as e:
        raise RegionError(str(e)) from e


def read_regions(regions_dir: str | Path, max_regions: int = 36, image_ids: Collection[str] | None = None) -> dict[str, RegionRecord]:
    """Validated region records by image_id (first ``max_regions`` boxes); only ``image_ids`` when given."""
    wanted = None if image_ids is None else set(image_ids)
    out: dict[str, RegionRecord] = {}
    for path in region_shards(regions_dir):
        try:
            for key, rec in iter_regions(path):
                if wanted is not None and rec.image_id not in wanted:
                    continue
                reason = region_problem(rec)
                if reason:
                    raise RegionError(f"{path}:{key}: {reason}")
                n = min(rec.num_boxes, max_regions)
                cls = None if rec.cls_prob is None else rec.cls_prob[:n]
                out[rec.image_id] = RegionRecord(rec.image_id, rec.image_w, rec.image_h, rec.boxes[:n], rec.features[:n], cls)
        except ShardError as e:
            raise RegionError(str(e)) from e
    return out


def feature_shape(regions: dict[str, RegionRecord]) -> tuple[int, int]:
    """``(feature width, detector class count)`` of the records (1 class when they carry no ``cls_prob``)."""
    first = next(iter(regions.values()))
    return int(first.features.shape[1]), int(first.cls_prob.shape[1]) if first.cls_prob is not None else 1


def relative_boxes(rec: RegionRecord) -> np.ndarray:
    """The record's boxes as fractions of the image size, clipped to [0, 1] (what the encoders embed)."""
    wh = np.array([rec.image_w, rec.image_h] * 2, dtype=np.float32)
    return np.clip(rec.boxes / wh, 0.0, 1.0)


def collate_inputs(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad the encoder inputs of examples holding ``input_ids`` ``[T]``, ``feat`` ``[R, D]`` and ``boxes`` ``[R, 4]``
    (and ``links`` ``[T]``, region index per token, when the first example has them: padded with ``-1``, no link)."""
    b = len(examples)
    t = max(ex["input_ids"].size for ex in examples)
    r = max(ex["feat"].shape[0] for ex in examples)
    d = examples[0]["feat"].shape[1]
    out = {
        "input_ids": torch.zeros(b, t, dtype=torch.long),
        "text_mask": torch.zeros(b, t, dtype=torch.bool),
        "feat": torch.zeros(b, r, d, dtype=torch.float32),
        "boxes": torch.zeros(b, r, 4),
        "region_mask": torch.zeros(b, r, dtype=torch.bool),
    }
    for i, ex in enumerate(examples):
        n, nr = ex["input_ids"].size, ex["feat"].shape[0]
        out["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
        out["text_mask"][i, :n] = True
        out["feat"][i, :nr] = torch.from_numpy(ex["feat"].astype(np.float32))
        out["boxes"][i, :nr] = torch.from_numpy(ex["boxes"])
        out["region_mask"][i, :nr] = True
    if "links" in examples[0]:
        out["links"] = torch.full((b, t), -1, dtype=torch.long)
        for i, ex in enumerate(examples):
            out["links"][i, : ex["links"].size] = torch.from_numpy(np.asarray(ex["links"], np.int64))
    return out


def encoder_example(text: str, rec: RegionRecord, tokenizer, max_len: int, text_pair: str | None = None) -> dict[str, Any]:
    """One (text, image) encoding's inputs: token ids (``text [SEP] text_pair`` when a pair is given, cut
    from the longer side), the image's region features (shared, not copied) and relative boxes."""
    ids = tokenizer(text, text_pair, truncation=True, max_length=max_len)["input_ids"]
    return {"input_ids": np.asarray(ids, np.int64), "feat": rec.features, "boxes": relative_boxes(rec)}


def collate_labelled(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Padded encoder inputs plus each example's class index ``target`` ``[B]``."""
    return {**collate_inputs(examples), "target": torch.tensor([ex["target"] for ex in examples], dtype=torch.long)}
