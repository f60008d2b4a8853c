"""Batching: collate examples into padded tensors and masks, add the loss targets, carry the skip counts."""
from __future__ import annotations

import functools
import itertools
from typing import Any, Iterable, Iterator

import torch

from trainer.data.masking import IGNORE

from trainer.data.read import DataError, SkipCounter


def collate(examples: list[dict]) -> dict[str, Any]:
    """Pad to the longest text, the most regions and the most pairs in the batch; masks say what is real."""
    b = len(examples)
    t = max(ex["input_ids"].size for ex in examples)
    r = max(ex["feat"].shape[0] for ex in examples)
    dims = {ex["feat"].shape[1] for ex in examples}
    if len(dims) > 1:
        raise DataError(f"feature widths differ within a batch: {sorted(dims)} (examples {[ex['uid'] for ex in examples]})")
    d = dims.pop()
    c = max((ex["cls"].shape[1] for ex in examples if ex["cls"] is not None), default=1)
    k = max(1, max(len(ex["pairs"]) for ex in examples))

    out = {
        "input_ids": torch.zeros(b, t, dtype=torch.long),
        "text_mask": torch.zeros(b, t, dtype=torch.bool),
        "mlm_labels": torch.full((b, t), IGNORE, dtype=torch.long),
        "feat": torch.zeros(b, r, d, dtype=torch.float16),
        "boxes": torch.zeros(b, r, 4),
        "region_mask": torch.zeros(b, r, dtype=torch.bool),
        "region_masked": torch.zeros(b, r, dtype=torch.bool),  # region-classification targets
        "cls_target": torch.zeros(b, r, c),  # dropped below: only the masked rows travel (mrc_target)
        "itm_label": torch.tensor([ex["itm"] for ex in examples], dtype=torch.float32),
        "pair_region": torch.zeros(b, k, dtype=torch.long),
        "pair_start": torch.zeros(b, k, dtype=torch.long),
        "pair_end": torch.ones(b, k, dtype=torch.long),  # padding pairs span token 0 (masked out)
        "pair_target": torch.zeros(b, k),
        "pair_mask": torch.zeros(b, k, dtype=torch.bool),
    }
    for i, ex in enumerate(examples):
        n, nr, np_ = ex["input_ids"].size, ex["feat"].shape[0], len(ex["pairs"])
        out["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
        out["text_mask"][i, :n] = True
        out["mlm_labels"][i, :n] = torch.from_numpy(ex["mlm_labels"])
        out["feat"][i, :nr] = torch.from_numpy(ex["feat"])
        out["boxes"][i, :nr] = torch.from_numpy(ex["boxes"])
        out["region_mask"][i, :nr] = True
        if ex["cls"] is not None:
            if ex["cls"].shape[1] != c:
                raise DataError(f"{ex['uid']}: class distribution has {ex['cls'].shape[1]} classes, others in the batch {c}")
            out["region_masked"][i, :nr] = torch.from_numpy(ex["region_masked"])
            out["cls_target"][i, :nr] = torch.from_numpy(ex["cls"])
        if np_:
            p = ex["pairs"]
            spans = ex["phrase_spans"][p.phrase]
            out["pair_region"][i, :np_] = torch.from_numpy(p.region)
            out["pair_start"][i, :np_] = torch.from_numpy(spans[:, 0])
            out["pair_end"][i, :np_] = torch.from_numpy(spans[:, 1])
            out["pair_target"][i, :np_] = torch.from_numpy(p.target)
            out["pair_mask"][i, :np_] = True
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
