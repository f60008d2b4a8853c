"""Per-example steps: tokenize with phrase spans, ITM negatives from a shuffle buffer, MLM and region masking, region-phrase sampling."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from trainer.data.masking import IGNORE, mask_regions as pick_masked_regions, mask_tokens
from trainer.data.sampling import SamplerConfig, sample_pairs as sample_example_pairs
from trainer.data.text import tokenize_with_spans

from trainer.data.read import SkipCounter
from trainer.data.shard_set import example_rng

_TEXT_FIELDS = ("text", "spans", "input_ids", "phrase_spans", "align", "iou", "score")



def tokenize(src: Iterable[dict], tokenizer, max_len: int, skips: SkipCounter) -> Iterator[dict]:
    """WordPiece ids and token spans; phrases truncated away are dropped (and counted)."""
    for ex in src:
        ids, tspans = tokenize_with_spans(tokenizer, ex["text"], ex["spans"], max_len)
        keep = [i for i, s in enumerate(tspans) if s is not None]
        if len(keep) < len(tspans):
            skips.note("phrases_truncated", len(tspans) - len(keep))
        yield {
            **ex,
            "input_ids": ids,
            "phrase_spans": np.array([tspans[i] for i in keep], dtype=np.int64).reshape(-1, 2),
            "align": ex["align"][keep],
            "iou": ex["iou"][keep],
            "score": ex["score"][keep],
        }


def itm_negatives(
    src: Iterable[dict], buffer_size: int, neg_prob: float, seed: int, epoch: int, rank: int = 0, worker: int = 0
) -> Iterator[dict]:
    """Shuffle through a buffer; for ``neg_prob`` of the examples swap in another image's caption.

    A swapped example is an image-text-matching negative (``itm = 0``) and carries no MLM, region
    or grounding targets, as in ViLBERT: its phrases describe a different image.
    """
    rng = np.random.default_rng([seed, epoch, rank, worker, 0x17])
    buf: list[dict] = []

    def emit(ex: dict) -> dict:
        others = [o for o in buf if o["image_id"] != ex["image_id"]]
        if others and rng.random() < neg_prob:
            other = others[rng.integers(len(others))]
            return {**ex, **{f: other[f] for f in _TEXT_FIELDS}, "uid": f"{ex['uid']}|neg|{other['uid']}", "itm": 0.0}
        return {**ex, "itm": 1.0}

    for ex in src:
        if len(buf) < buffer_size:
            buf.append(ex)
            continue
        i = int(rng.integers(len(buf)))
        out, buf[i] = buf[i], ex
        yield emit(out)
    while buf:
        out = buf.pop(int(rng.integers(len(buf))))
        yield emit(out)


def mask_text(src: Iterable[dict], prob: float, mask_id: int, vocab_size: int, special_ids: set[int], seed: int, epoch: int) -> Iterator[dict]:
    for ex in src:
        if ex["itm"] == 0.0:
            ids, labels = ex["input_ids"], np.full_like(ex["input_ids"], IGNORE)
        else:
            rng = example_rng(seed, epoch, ex["uid"], "mlm")
            ids, labels = mask_tokens(ex["input_ids"], rng, prob, mask_id, vocab_size, special_ids)
        yield {**ex, "input_ids": ids, "mlm_labels": labels}


def mask_regions(src: Iterable[dict], prob: float, seed: int, epoch: int) -> Iterator[dict]:
    """Zero the features of masked regions; only images with a class distribution get masked."""
    for ex in src:
        n = ex["feat"].shape[0]
        if ex["itm"] == 0.0 or ex["cls"] is None:
            masked = np.zeros(n, dtype=bool)
        else:
            masked = pick_masked_regions(n, example_rng(seed, epoch, ex["uid"], "mrc"), prob)
        feat = ex["feat"]
        if masked.any():
            feat = feat.copy()
            feat[masked] = 0.0
        yield {**ex, "feat": feat, "region_masked": masked}


def sample_pairs(src: Iterable[dict], cfg: SamplerConfig, seed: int, epoch: int) -> Iterator[dict]:
    for ex in src:
        if ex["itm"] == 0.0:
            pairs = sample_example_pairs(ex["align"][:0], ex["iou"][:0], ex["score"][:0], cfg, np.random.default_rng(0))
        else:
            pairs = sample_example_pairs(ex["align"], ex["iou"], ex["score"], cfg, example_rng(seed, epoch, ex["uid"], "pairs"))
        yield {**ex, "pairs": pairs}
