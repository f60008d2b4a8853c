"""NLVR2 examples for the fine-tuning engine (the "pair" setup): the sentence encoded with each of the
two images, and the label; a batch of B examples is 2B encodings, rows 2b (img0) and 2b+1 (img1)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from schemas.records import RegionRecord
from trainer.tasks.nlvr2.reader import NLVR2Error, NLVR2Example
from trainer.tasks.regions import collate_inputs, encoder_example


def check_images(examples: Sequence[NLVR2Example], region_of: Mapping[str, str], source: str, key: str) -> None:
    """Both images of every example must have a region sample; the error names the first identifier and image that do not."""
    missing = [(e, img) for e in examples for img in e.images if img not in region_of]
    if missing:
        images = sorted({img for _, img in missing})
        raise NLVR2Error(f"{source}: identifier {missing[0][0].identifier}: image {missing[0][1]} has no region sample (joined by {key}); "
                         f"{len({e.identifier for e, _ in missing})} example(s) of {len(images)} image(s) lack one, e.g. {images[:5]}")


def make_examples(examples: Sequence[NLVR2Example], regions: Mapping[str, RegionRecord], region_of: Mapping[str, str], tokenizer,
                  max_len: int) -> list[dict[str, Any]]:
    """The sentence with the left and with the right image; target 1 for True (0 for False or unlabelled)."""
    return [
        {"example": e, "pair": [encoder_example(e.sentence, regions[region_of[img]], tokenizer, max_len) for img in e.images], "target": int(bool(e.label))}
        for e in examples
    ]


def collate_pairs(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Padded encoder inputs of the 2B encodings (img0, img1 of each example in turn) plus the labels ``[B]``."""
    return {**collate_inputs([enc for ex in examples for enc in ex["pair"]]), "target": torch.tensor([ex["target"] for ex in examples], dtype=torch.long)}
