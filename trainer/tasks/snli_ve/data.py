"""SNLI-VE examples for the fine-tuning engine: the tokenised hypothesis with the premise image's regions, and the class index."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.records import RegionRecord
from trainer.tasks.regions import encoder_example
from trainer.tasks.snli_ve.reader import SNLIVEError, SNLIVEExample


def check_images(examples: Sequence[SNLIVEExample], region_of: Mapping[str, str], source: str, key: str) -> None:
    """Every premise image must have a region sample; the error names the first pairID and image that do not."""
    missing = [e for e in examples if e.image_id not in region_of]
    if missing:
        images = sorted({e.image_id for e in missing})
        raise SNLIVEError(f"{source}: pairID {missing[0].pair_id}: field 'Flickr30K_ID' {missing[0].image_id!r} has no region sample "
                          f"(joined by {key}); {len(missing)} example(s) of {len(images)} image(s) lack one, e.g. {images[:5]}")


def make_examples(examples: Sequence[SNLIVEExample], regions: Mapping[str, RegionRecord], region_of: Mapping[str, str], tokenizer,
                  max_len: int) -> list[dict[str, Any]]:
    """The hypothesis encoded with its premise image (the caption ``sentence1`` is not input in visual entailment)."""
    return [{"example": e, **encoder_example(e.hypothesis, regions[region_of[e.image_id]], tokenizer, max_len), "target": e.label_index}
            for e in examples]
