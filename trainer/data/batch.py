"""Batching: collate examples into padded tensors and masks, add the loss targets, carry the skip counts."""
from __future__ import annotations

import functools
import itertools
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from trainer.data.masking import IGNORE

from trainer.data.read import DataError, SkipCounter


def collate(examples: list[dict]) -> dict[str, Any]:
    """Pad to the longest text, the most regions and the most pairs in the batch; masks say what is real.

    Filled as NumPy arrays and wrapped as tensors at the end (a tensor slice assignment costs several
    times a NumPy one, and a batch of 512 makes ~10,000 of them). Only the masked regions' class
    distributions are gathered (``mrc_target``): a dense [B, R, 1601] float32 target is 118 MB to
    zero and fill per batch of 512 at 36 regions, for the ~15 % of rows the loss reads.
    """
    b = len(examples)
    t = max(ex["input_ids"].size for ex in examples)
    r = max(ex["feat"].shape[0] for ex in examples)
    dims = {ex["feat"].shape[1] for ex in examples}
    if len(dims) > 1:
        raise DataError(f"feature widths differ within a batch: {sorted(dims)} (examples {[ex['uid'] for ex in examples]})")
    d = dims.pop()
    c = max((ex["cls"].shape[1] for ex in examples if ex["cls"] is not None), default=1)
    k = max(1, max(len(ex["pairs"]) for ex in examples))

    input_ids = np.zeros((b, t), np.int64)
    text_mask = np.zeros((b, t), bool)
    mlm_labels = np.full((b, t), IGNORE, np.int64)
    feat = np.empty((b, r, d), np.float16)  # the largest array: only padding rows are zeroed, below
    boxes = np.zeros((b, r, 4), np.float32)
    region_mask = np.zeros((b, r), bool)
    region_masked = np.zeros((b, r), bool)  # region-classification targets
    mrc_rows: list[np.ndarray] = []  # the masked regions' class distributions, in [B*R] order
    pair_region = np.zeros((b, k), np.int64)
    pair_start = np.zeros((b, k), np.int64)
    pair_end = np.ones((b, k), np.int64)  # padding pairs span token 0 (masked out)
    pair_target = np.zeros((b, k), np.float32)
    pair_mask = np.zeros((b, k), bool)
    for i, ex in enumerate(examples):
        n, nr, np_ = ex["input_ids"].size, ex["feat"].shape[0], len(ex["pairs"])
        input_ids[i, :n] = ex["input_ids"]
        text_mask[i, :n] = True
        mlm_labels[i, :n] = ex["mlm_labels"]
        feat[i, :nr] = ex["feat"]
        feat[i, nr:] = 0
        boxes[i, :nr] = ex["boxes"]
        region_mask[i, :nr] = True
        if ex["cls"] is not None:
            if ex["cls"].shape[1] != c:
                raise DataError(f"{ex['uid']}: class distribution has {ex['cls'].shape[1]} classes, others in the batch {c}")
            m = np.asarray(ex["region_masked"], dtype=bool)  # a mask, never integer indices
            region_masked[i, :nr] = m
            mrc_rows.append(ex["cls"][m])
        if np_:
            p = ex["pairs"]
            spans = ex["phrase_spans"][p.phrase]
            pair_region[i, :np_] = p.region
            pair_start[i, :np_] = spans[:, 0]
            pair_end[i, :np_] = spans[:, 1]
            pair_target[i, :np_] = p.target
            pair_mask[i, :np_] = True
    mrc_target = np.concatenate(mrc_rows).astype(np.float32, copy=False) if mrc_rows else np.zeros((0, c), np.float32)
    out = {name: torch.from_numpy(a) for name, a in (
        ("input_ids", input_ids), ("text_mask", text_mask), ("mlm_labels", mlm_labels), ("feat", feat), ("boxes", boxes),
        ("region_mask", region_mask), ("region_masked", region_masked), ("mrc_target", mrc_target),
        ("pair_region", pair_region), ("pair_start", pair_start), ("pair_end", pair_end), ("pair_target", pair_target), ("pair_mask", pair_mask))}
    out["itm_label"] = torch.tensor([ex["itm"] for ex in examples], dtype=torch.float32)
    out["uids"] = [ex["uid"] for ex in examples]
    return add_targets(out)


def add_targets(batch: dict[str, Any]) -> dict[str, Any]:
    """Gather indices and targets of the masked positions, computed here on the host.

    ``mlm_pos``/``mrc_pos``: flat indices into [B*T] / [B*R]; ``mlm_target`` the token ids,
    ``mrc_target`` the detector distributions of the masked regions (replacing the dense
    ``cls_target``, ~7x fewer bytes to copy); ``pair_width`` the longest phrase span (a Python int).
    The model gathers by index, so a GPU step never waits on the size of a boolean selection.
    """
    mlm = batch["mlm_labels"].reshape(-1)
    batch["mlm_pos"] = torch.nonzero(mlm != IGNORE).reshape(-1)
    batch["mlm_target"] = mlm[batch["mlm_pos"]]
    batch["mrc_pos"] = torch.nonzero(batch["region_masked"].reshape(-1)).reshape(-1)
    if "cls_target" in batch:  # a dense [B, R, C] target (tests, benches): keep the masked rows
        cls = batch.pop("cls_target")
        batch["mrc_target"] = cls.reshape(-1, cls.shape[-1])[batch["mrc_pos"]]
    batch["pair_width"] = int((batch["pair_end"] - batch["pair_start"]).clamp(min=1).max()) if batch["pair_end"].numel() else 1
    return batch


def batched(src: Iterable[dict], batch_size: int, skips: SkipCounter) -> Iterator[dict]:
    """Collate ``batch_size`` examples at a time (the last batch may be short).

    Each batch carries the skip counts since the previous one; counts arising after the last
    example leave in a final empty batch (``n == 0``) so none are lost.
    """
    for chunk in iter(functools.partial(_take, iter(src), batch_size), []):
        yield {**collate(chunk), "n": len(chunk), "skips": skips.take()}
    rest = skips.take()
    if rest:
        yield {"n": 0, "skips": rest}


def _take(it: Iterator, n: int) -> list:
    return list(itertools.islice(it, n))
