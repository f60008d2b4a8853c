"""Per-example steps: tokenize with phrase spans, ITM negatives (swapped captions, same-image edits) from a shuffle buffer, MLM and region masking, region-phrase sampling."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from trainer.data.hard_negatives import BufferVocab, hard_negative
from trainer.data.masking import IGNORE, mask_regions as pick_masked_regions, mask_tokens
from trainer.data.sampling import SamplerConfig, sample_pairs as sample_example_pairs
from trainer.data.text import tokenize_with_spans

from trainer.data.read import SkipCounter
from trainer.data.shard_set import example_rng

_TEXT_FIELDS = ("text", "spans", "input_ids", "phrase_spans", "align", "iou", "score")



def tokenized(ex: dict, tokenizer, max_len: int) -> tuple[dict, int]:
    """``ex`` with WordPiece ids and token spans of its phrases, and how many phrases truncation dropped."""
    ids, tspans = tokenize_with_spans(tokenizer, ex["text"], ex["spans"], max_len)
    keep = [i for i, s in enumerate(tspans) if s is not None]
    out = {
        **ex,
        "input_ids": ids,
        "phrase_spans": np.array([tspans[i] for i in keep], dtype=np.int64).reshape(-1, 2),
        "align": ex["align"][keep],
        "iou": ex["iou"][keep],
        "score": ex["score"][keep],
    }
    return out, len(tspans) - len(keep)


def tokenize(src: Iterable[dict], tokenizer, max_len: int, skips: SkipCounter) -> Iterator[dict]:
    """WordPiece ids and token spans; phrases truncated away are dropped (and counted)."""
    for ex in src:
        out, dropped = tokenized(ex, tokenizer, max_len)
        if dropped:
            skips.note("phrases_truncated", dropped)
        yield out


def swap_negative(ex: dict, other: dict) -> dict:
    """``ex``'s image with ``other``'s caption (another image's): a whole-caption ITM negative."""
    return {**ex, **{f: other[f] for f in _TEXT_FIELDS}, "uid": f"{ex['uid']}|neg|{other['uid']}", "itm": 0.0}


def same_image_negative(ex: dict, vocab: BufferVocab, rng: np.random.Generator, tokenizer, max_len: int) -> dict | None:
    """``ex``'s image with its caption changed in one attribute, object or relation (:mod:`trainer.data.hard_negatives`);
    None when the caption offers no such edit with a replacement from ``vocab``."""
    made = hard_negative(ex["text"], ex["spans"], ex.get("image_texts", (ex["text"],)), vocab, rng)
    if made is None:
        return None
    text, spans, edit = made
    out, _ = tokenized({**ex, "text": text, "spans": spans}, tokenizer, max_len)
    return {**out, "uid": f"{ex['uid']}|hard|{edit.kind}", "itm": 0.0, "itm_edit": edit}


def itm_kind(uid: str) -> str:
    """"positive", "swap" (another image's caption) or "hard" (same-image edit), from an example's uid."""
    return "hard" if "|hard|" in uid else "swap" if "|neg|" in uid else "positive"


def buffer_shuffle(src: Iterable[dict], buf: list[dict], size: int, rng: np.random.Generator,
                   put: Callable[[dict], None] | None = None, take: Callable[[dict], None] | None = None) -> Iterator[dict]:
    """``src`` shuffled through ``buf`` (``size`` slots, drawn with ``rng``): an example leaves when a later
    one takes its slot, the rest leave in random order at the end. ``buf`` is the caller's list, so when an
    example is yielded the caller sees what is still buffered (the pool its negatives come from);
    ``put``/``take`` see each example enter and leave."""
    for ex in src:
        if len(buf) < size:
            buf.append(ex)
            if put:
                put(ex)
            continue
        i = int(rng.integers(len(buf)))
        out, buf[i] = buf[i], ex
        if take:
            take(out)
        if put:
            put(ex)
        yield out
    while buf:
        out = buf.pop(int(rng.integers(len(buf))))
        if take:
            take(out)
        yield out


def itm_negatives(
    src: Iterable[dict], buffer_size: int, neg_prob: float, seed: int, epoch: int, rank: int = 0, worker: int = 0,
    hard_share: float = 0.0, tokenizer=None, max_len: int = 0, skips: SkipCounter | None = None,
) -> Iterator[dict]:
    """Shuffle through a buffer; for ``neg_prob`` of the examples make an image-text-matching negative.

    A negative (``itm = 0``) is another image's caption swapped in, or, for ``hard_share`` of the
    negatives, this image's caption with one attribute, object or relation changed (a same-image
    hard negative, :func:`same_image_negative`; needs ``tokenizer``). Which negatives are hard is
    drawn per example, seeded by its key, and does not touch the buffer's generator: the stream of
    examples and of negatives is the same at every share, only the negatives' kind differs, and
    ``hard_share = 0`` is the whole-caption-swap stream exactly. A caption that allows no edit stays
    a swap (counted as ``itm_hard_negative_unavailable``).

    A negative carries no MLM, region or grounding targets, as in ViLBERT: its phrases do not
    describe this image.
    """
    if hard_share > 0 and tokenizer is None:
        raise ValueError("same-image hard negatives need the tokenizer (to re-tokenize the edited caption)")
    rng = np.random.default_rng([seed, epoch, rank, worker, 0x17])
    buf: list[dict] = []
    vocab = BufferVocab() if hard_share > 0 else None

    # Buffered examples per image: the count of other images' examples without scanning the buffer
    # (a scan per example was 77 us of a loader worker's 1.2 ms at batch 512).
    per_image: dict[str, int] = {}

    def nth_other(image_id: str, k: int) -> dict:
        """The k-th buffered example of another image, in buffer order."""
        if not per_image.get(image_id):
            return buf[k]
        for o in buf:
            if o["image_id"] != image_id:
                if k == 0:
                    return o
                k -= 1
        raise AssertionError("fewer other-image examples than counted")

    def emit(ex: dict) -> dict:
        n_others = len(buf) - per_image.get(ex["image_id"], 0)
        if n_others and rng.random() < neg_prob:
            other = nth_other(ex["image_id"], int(rng.integers(n_others)))
            if vocab is not None:
                ex_rng = example_rng(seed, epoch, ex["uid"], "itm_hard")
                if ex_rng.random() < hard_share:
                    hard = same_image_negative(ex, vocab, ex_rng, tokenizer, max_len)
                    if hard is not None:
                        return hard
                    if skips is not None:
                        skips.note("itm_hard_negative_unavailable")
            return swap_negative(ex, other)
        return {**ex, "itm": 1.0}

    def put(ex: dict) -> None:
        per_image[ex["image_id"]] = per_image.get(ex["image_id"], 0) + 1
        if vocab is not None:
            vocab.add(ex["text"], ex["spans"])

    def take(ex: dict) -> None:
        per_image[ex["image_id"]] -= 1
        if vocab is not None:
            vocab.remove(ex["text"], ex["spans"])

    for out in buffer_shuffle(src, buf, buffer_size, rng, put, take):
        yield emit(out)


def mask_text(src: Iterable[dict], prob: float, mask_id: int, vocab_size: int, special_ids: set[int], seed: int, epoch: int,
              mask_negatives: bool = False) -> Iterator[dict]:
    """MLM masking of positives' captions; a negative gets no MLM targets, and its input is masked
    the same way only with ``mask_negatives`` (else "no [MASK] in the caption" tells it from a positive)."""
    for ex in src:
        if ex["itm"] == 0.0:
            ids, labels = ex["input_ids"], np.full_like(ex["input_ids"], IGNORE)
            if mask_negatives:
                ids, _ = mask_tokens(ids, example_rng(seed, epoch, ex["uid"], "mlm"), prob, mask_id, vocab_size, special_ids)
        else:
            rng = example_rng(seed, epoch, ex["uid"], "mlm")
            ids, labels = mask_tokens(ex["input_ids"], rng, prob, mask_id, vocab_size, special_ids)
        yield {**ex, "input_ids": ids, "mlm_labels": labels}


def mask_regions(src: Iterable[dict], prob: float, seed: int, epoch: int, mask_negatives: bool = False) -> Iterator[dict]:
    """Zero the features of masked regions; only images with a class distribution get masked.

    A negative's regions are targets of nothing (``region_masked`` stays False); with
    ``mask_negatives`` its features are zeroed as a positive's would be, so zeroed regions do not
    tell a positive from a negative.
    """
    for ex in src:
        n = ex["feat"].shape[0]
        zeroed = np.zeros(n, dtype=bool)
        if ex["cls"] is not None and (ex["itm"] != 0.0 or mask_negatives):
            zeroed = pick_masked_regions(n, example_rng(seed, epoch, ex["uid"], "mrc"), prob)
        feat = ex["feat"]
        if zeroed.any():
            feat = feat.copy()
            feat[zeroed] = 0.0
        masked = zeroed if ex["itm"] != 0.0 else np.zeros(n, dtype=bool)
        yield {**ex, "feat": feat, "region_masked": masked}


def sample_pairs(src: Iterable[dict], cfg: SamplerConfig, seed: int, epoch: int) -> Iterator[dict]:
    for ex in src:
        if ex["itm"] == 0.0:
            pairs = sample_example_pairs(ex["align"][:0], ex["iou"][:0], ex["score"][:0], cfg, np.random.default_rng(0))
        else:
            pairs = sample_example_pairs(ex["align"], ex["iou"], ex["score"], cfg, example_rng(seed, epoch, ex["uid"], "pairs"))
        yield {**ex, "pairs": pairs}
