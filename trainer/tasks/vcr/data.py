"""VCR examples for the fine-tuning engine: per (question, mode) the four (context, choice) encodings
with the image's regions, and the correct choice; a batch of B examples is 4B encodings."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from schemas.records import RegionRecord
from trainer.tasks.regions import collate_inputs, encoder_example
from trainer.tasks.vcr.reader import VCRError, VCRExample
from trainer.tasks.vcr.text import choice_pairs, label_of


def check_images(examples: Sequence[VCRExample], region_of: Mapping[str, str], source: str, key: str) -> None:
    """Every question's image must have a region sample; the error names the first annot_id and image that do not."""
    missing = [e for e in examples if e.image_stem not in region_of]
    if missing:
        images = sorted({e.image_stem for e in missing})
        raise VCRError(f"{source}: annot_id {missing[0].annot_id}: img_fn {missing[0].img_fn!r} has no region sample (joined by {key}); "
                       f"{len(missing)} question(s) of {len(images)} image(s) lack one, e.g. {images[:5]}")


def make_examples(questions: Sequence[VCRExample], regions: Mapping[str, RegionRecord], region_of: Mapping[str, str], tokenizer,
                  max_len: int, mode: str) -> list[dict[str, Any]]:
    """``mode`` "answer" (Q→A: question [SEP] answer) or "rationale" (QA→R: question + correct answer [SEP]
    rationale); object references become their names (VCR's person tags gender-neutral names)."""
    out = []
    for e in questions:
        rec = regions[region_of[e.image_stem]]
        pairs = choice_pairs(e, mode)
        choices = [encoder_example(" ".join(ctx[0]), rec, tokenizer, max_len, " ".join(ch[0])) for ctx, ch in pairs]
        out.append({"example": e, "mode": mode, "choices": choices, "target": label_of(e, mode) or 0})
    return out


def collate_choices(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Padded encoder inputs of the 4B (context, choice) encodings, a question's four consecutive, plus the labels ``[B]``."""
    return {**collate_inputs([c for ex in examples for c in ex["choices"]]), "target": torch.tensor([ex["target"] for ex in examples], dtype=torch.long)}
