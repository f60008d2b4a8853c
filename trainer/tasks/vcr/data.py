"""VCR examples for the fine-tuning engine: per (question, mode) the four (context, choice) encodings
with the image's regions, and the correct choice; a batch of B examples is 4B encodings. Given the
questions' metadata, each encoding also carries ``links`` (per token, the region its object reference
refers to, :mod:`trainer.tasks.vcr.links`) for the encoder's linked-region word embeddings."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from schemas.records import RegionRecord
from trainer.tasks.regions import collate_inputs, encoder_example, relative_boxes
from trainer.tasks.vcr.links import object_regions, region_links, tokenize_linked
from trainer.tasks.vcr.metadata import VCRMetadata, read_metadata
from trainer.tasks.vcr.reader import VCRError, VCRExample
from trainer.tasks.vcr.text import choice_pairs, label_of


def check_images(examples: Sequence[VCRExample], region_of: Mapping[str, str], source: str, key: str) -> None:
    """Every question's image must have a region sample; the error names the first annot_id and image that do not."""
    missing = [e for e in examples if e.image_stem not in region_of]
    if missing:
        images = sorted({e.image_stem for e in missing})
        raise VCRError(f"{source}: annot_id {missing[0].annot_id}: img_fn {missing[0].img_fn!r} has no region sample (joined by {key}); "
                       f"{len(missing)} question(s) of {len(images)} image(s) lack one, e.g. {images[:5]}")


def read_question_metadata(questions: Sequence[VCRExample], images_dir: str | Path) -> dict[str, VCRMetadata]:
    """Each question's ``metadata_fn`` (under ``images_dir``, VCR's ``vcr1images``) read once; its box count
    must match every question's ``objects`` (the error names the annot_id)."""
    out: dict[str, VCRMetadata] = {}
    for e in questions:
        if e.metadata_fn not in out:
            path = Path(images_dir) / e.metadata_fn
            if not path.is_file():
                raise VCRError(f"annot_id {e.annot_id}: metadata_fn {path}: no such file (--images names the metadata root, "
                               "VCR's vcr1images; --no-links runs without the boxes)")
            out[e.metadata_fn] = read_metadata(path, len(e.objects))
        elif out[e.metadata_fn].boxes.shape[0] != len(e.objects):
            raise VCRError(f"annot_id {e.annot_id}: metadata_fn {e.metadata_fn!r} has {out[e.metadata_fn].boxes.shape[0]} boxes "
                           f"but the record lists {len(e.objects)} objects")
    return out


def matched_objects(questions: Sequence[VCRExample], metadata: Mapping[str, VCRMetadata], regions: Mapping[str, RegionRecord],
                    region_of: Mapping[str, str]) -> float:
    """The share of the questions' images' objects that matched a region (1.0 when there are none)."""
    seen = {(e.metadata_fn, region_of[e.image_stem]) for e in questions}
    hits = [object_regions(metadata[m], regions[r]) >= 0 for m, r in sorted(seen)]
    n = sum(h.size for h in hits)
    return float(sum(int(h.sum()) for h in hits)) / n if n else 1.0


def make_examples(questions: Sequence[VCRExample], regions: Mapping[str, RegionRecord], region_of: Mapping[str, str], tokenizer,
                  max_len: int, mode: str, metadata: Mapping[str, VCRMetadata] | None = None) -> list[dict[str, Any]]:
    """``mode`` "answer" (Q→A: question [SEP] answer) or "rationale" (QA→R: question + correct answer [SEP]
    rationale); object references become their names (VCR's person tags gender-neutral names). With
    ``metadata`` (by ``metadata_fn``) every encoding gets its tokens' region ``links`` as well."""
    out = []
    for e in questions:
        rec = regions[region_of[e.image_stem]]
        pairs = choice_pairs(e, mode)
        if metadata is None:
            choices = [encoder_example(" ".join(ctx[0]), rec, tokenizer, max_len, " ".join(ch[0])) for ctx, ch in pairs]
        else:
            if e.metadata_fn not in metadata:
                raise VCRError(f"annot_id {e.annot_id}: no metadata read for metadata_fn {e.metadata_fn!r}")
            to_region = object_regions(metadata[e.metadata_fn], rec)
            boxes = relative_boxes(rec)
            choices = []
            for ctx, ch in pairs:
                ids, links = tokenize_linked(tokenizer, ctx, ch, max_len)
                choices.append({"input_ids": ids, "feat": rec.features, "boxes": boxes, "links": region_links(links, to_region)})
        out.append({"example": e, "mode": mode, "choices": choices, "target": label_of(e, mode) or 0})
    return out


def collate_choices(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Padded encoder inputs of the 4B (context, choice) encodings, a question's four consecutive, plus the labels ``[B]``."""
    return {**collate_inputs([c for ex in examples for c in ex["choices"]]), "target": torch.tensor([ex["target"] for ex in examples], dtype=torch.long)}
