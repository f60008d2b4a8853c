"""Reading the shards: region shard k zipped with label shard k, decoded pickle-free and validated, one example per (image, caption).

Shards are local paths or Beam filesystem URLs (``gs://``…): :func:`schemas.shards.iter_shard` streams
either, one sample in memory at a time, through :mod:`ssga_io.fs` (Beam is imported only for a URL)."""
from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Iterable, Iterator

import numpy as np

from schemas.records import labels_problem, region_problem
from schemas.shards import ShardError, decode_labels, decode_region, iter_shard

from ssga_io import fs
from trainer.data.shard_set import label_shard_for

log = logging.getLogger("trainer.data.chain")


class DataError(ValueError):
    """Training input breaks the shard contract; the message names the file, the record and why."""


class SkipCounter:
    """Raise on bad input, or (``policy="skip"``) log it and count it by kind.

    Each DataLoader worker holds its own copy; ``take()`` hands the counts since the last call to
    the batch being emitted, so the main process sees every worker's skips.
    """

    def __init__(self, policy: str = "raise"):
        if policy not in ("raise", "skip"):
            raise ValueError(f"bad_input policy must be 'raise' or 'skip', got {policy!r}")
        self.policy = policy
        self.counts: Counter[str] = Counter()

    def bad(self, kind: str, where: str, reason: str) -> None:
        if self.policy == "raise":
            raise DataError(f"{where}: {reason}")
        log.warning("skipping %s: %s: %s", kind, where, reason)
        self.counts[kind] += 1

    def note(self, kind: str, n: int = 1) -> None:
        """Count an expected drop that is not an error (e.g. an image without captions)."""
        self.counts[kind] += n

    def take(self) -> dict[str, int]:
        out = dict(self.counts)
        self.counts.clear()
        return out


def zip_label_shards(src: Iterable[dict], labels_dir: str, skips: SkipCounter) -> Iterator[dict]:
    """Read region shard k and label shard k in lockstep; keys must match position by position.

    A mismatch means every later label could belong to the wrong image, so with ``skip`` the rest
    of that shard pair is dropped (and counted), never zipped out of step.
    """
    for item in src:
        rpath = item["url"]
        lpath = label_shard_for(rpath, labels_dir)
        if not fs.exists(lpath):
            skips.bad("missing_label_shard", str(lpath), f"no label shard for region shard {rpath}")
            continue
        try:
            pairs = itertools.zip_longest(iter_shard(rpath), iter_shard(lpath))
            for i, (r, lab) in enumerate(pairs):
                if r is None or lab is None:
                    short, other = (rpath, lpath) if r is None else (lpath, rpath)
                    skips.bad("key_mismatch", f"{short}", f"has fewer samples than {other} (ends before sample {i})")
                    break
                (rkey, rmem), (lkey, lmem) = r, lab
                if rkey != lkey:
                    skips.bad(
                        "key_mismatch",
                        f"{lpath}:{lkey}",
                        f"sample {i} has key {lkey!r} but {rpath} has {rkey!r} there; label and region shards are out of step",
                    )
                    break
                yield {"__key__": rkey, "rpath": rpath, "lpath": str(lpath), "region": rmem, "labels": lmem}
        except ShardError as e:
            skips.bad("unreadable_shard", f"{rpath} + {lpath}", str(e))


def decode_pairs(src: Iterable[dict], skips: SkipCounter) -> Iterator[dict]:
    """Decode npy/json members (pickle-free) and check each record against the contract."""
    for item in src:
        key = item["__key__"]
        rwhere, lwhere = f"{item['rpath']}:{key}", f"{item['lpath']}:{key}"
        try:
            region = decode_region(item["region"], rwhere)
            labels = decode_labels(item["labels"], lwhere)
        except (ShardError, KeyError, TypeError, ValueError) as e:  # missing field, wrong type, bad npy
            skips.bad("bad_record", f"{lwhere}", f"undecodable sample: {e}")
            continue
        reason = region_problem(region)
        if reason:
            skips.bad("bad_record", rwhere, reason)
            continue
        reason = labels_problem(labels) or (
            f"image_id {labels.image_id!r} differs from the region shard's {region.image_id!r}"
            if labels.image_id != region.image_id
            else f"labels have {labels.num_boxes} regions, the region shard {region.num_boxes}"
            if labels.num_boxes != region.num_boxes
            else None
        )
        if reason:
            skips.bad("bad_record", lwhere, reason)
            continue
        yield {"__key__": key, "region": region, "labels": labels}


def to_examples(src: Iterable[dict], max_regions: int, skips: SkipCounter) -> Iterator[dict]:
    """One example per (image, caption): the caption's phrase rows of the label matrices."""
    for item in src:
        region, labels = item["region"], item["labels"]
        if not labels.captions:
            skips.note("images_without_captions")
            continue
        n = min(region.num_boxes, max_regions)
        wh = np.array([region.image_w, region.image_h] * 2, dtype=np.float32)
        image = {
            "feat": region.features[:n],  # float16 as stored: half the bytes from worker to trainer
            "boxes": np.clip(region.boxes[:n] / wh, 0.0, 1.0),  # xyxy relative to the image
            # float16 as stored: collate converts only the masked rows it gathers, not each image's whole
            # [N, 1601] matrix (~15 % of its rows are read)
            "cls": None if region.cls_prob is None else region.cls_prob[:n],
            "image_id": region.image_id,
            # Every caption of the image: what a same-image hard negative must not name (trainer.data.hard_negatives).
            "image_texts": tuple(cap["text"] for cap in labels.captions),
        }
        row = 0
        for cap in labels.captions:
            k = len(cap["phrases"])
            rows = slice(row, row + k)
            row += k
            yield {
                "uid": f"{item['__key__']}/{cap['caption_id']}",
                **image,
                "text": cap["text"],
                "spans": [(p["start"], p["end"]) for p in cap["phrases"]],
                "align": labels.align[rows, :n],
                "iou": labels.iou[rows, :n],
                "score": labels.score[rows, :n],
            }
