"""VCR's object links carried to what the encoder sees: WordPiece tokens, and the image's regions.

**Tokens**: the (context, choice) words are tokenised as pre-split words (a fast tokenizer's
``is_split_into_words`` and ``word_ids()``), so every sub-token of a linked word carries its link
("Jessie" → ``jessie``; a name split into pieces links every piece); ``[CLS]``/``[SEP]`` and unlinked
words get ``-1``. Truncation is the tokenizer's own (longest side first), and the links follow it.

**Regions**: links index VCR's ``objects`` (the metadata boxes), but the encoder sees the image's
region-shard boxes (a detector's, possibly another count and order). Each object maps to the region
whose box has the best IoU with its metadata box, both relative to their image size (so a detector
run on a resized image still matches); below ``MIN_IOU`` (0.5) the object is unlinked (``-1``) and
its word keeps only the tag word. When the region shards were extracted on the metadata boxes
(VCR's usual r2c setup) the map is the identity.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.boxes import box_iou
from schemas.records import RegionRecord
from trainer.tasks.regions import relative_boxes
from trainer.tasks.vcr.metadata import VCRMetadata
from trainer.tasks.vcr.text import NO_LINK

MIN_IOU = 0.5


def object_regions(meta: VCRMetadata, rec: RegionRecord, min_iou: float = MIN_IOU) -> np.ndarray:
    """``[num objects]`` int64: the region index of each metadata box (best IoU), ``-1`` below ``min_iou``."""
    n = meta.boxes.shape[0]
    if n == 0 or rec.boxes.shape[0] == 0:
        return np.full(n, NO_LINK, np.int64)
    rel = meta.boxes / np.array([meta.width, meta.height] * 2, np.float32)
    iou = box_iou(np.clip(rel, 0.0, 1.0), relative_boxes(rec))  # [objects, regions]
    best = iou.argmax(axis=1)  # first best on ties: deterministic
    return np.where(iou[np.arange(n), best] >= min_iou, best, NO_LINK).astype(np.int64)


def tokenize_linked(tokenizer, context: tuple[Sequence[str], Sequence[int]], choice: tuple[Sequence[str], Sequence[int]],
                    max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids [T], links [T])`` of ``[CLS] context [SEP] choice [SEP]`` (each a ``(words, links)``),
    truncated to ``max_len``; a token's link is its word's (``-1`` for special tokens and unlinked words)."""
    enc = tokenizer(list(context[0]), list(choice[0]), is_split_into_words=True, truncation=True, max_length=max_len)
    word_links = (context[1], choice[1])
    links = [NO_LINK if w is None else int(word_links[s][w]) for w, s in zip(enc.word_ids(), enc.sequence_ids())]
    return np.asarray(enc["input_ids"], np.int64), np.asarray(links, np.int64)


def region_links(links: np.ndarray, regions_of_objects: np.ndarray) -> np.ndarray:
    """Object links → region links (``-1`` stays ``-1``; an object without a matching region becomes ``-1``)."""
    return np.where(links >= 0, regions_of_objects[np.clip(links, 0, None)] if regions_of_objects.size else NO_LINK, NO_LINK).astype(np.int64)
