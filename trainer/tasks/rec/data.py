"""REC examples: tokenised expression + proposals + target (the best-IoU proposal), batching, the train subset, the swapped-text control."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from schemas.boxes import box_iou
from schemas.records import RegionRecord
from trainer.tasks.finetune import train_subset  # noqa: F401  (REC's API, the engine's rule)
from trainer.tasks.rec.refer import Expression
from trainer.tasks.regions import collate_labelled, relative_boxes


def make_examples(expressions: list[Expression], proposals: dict[str, RegionRecord], tokenizer, max_len: int) -> list[dict[str, Any]]:
    """Tokenised text, relative proposal boxes and the training target of each expression."""
    out = []
    for e in expressions:
        rec = proposals[e.image_id]
        ious = box_iou(rec.boxes, e.gt_box[None])[:, 0]
        ids = tokenizer(e.text, truncation=True, max_length=max_len)["input_ids"]
        out.append(
            {
                "expr": e,
                "input_ids": np.asarray(ids, np.int64),
                "feat": rec.features,
                "boxes": relative_boxes(rec),
                "target": int(ious.argmax()),
            }
        )
    return out


collate = collate_labelled  # padded encoder inputs plus the index of each expression's target proposal


def swap_texts(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The control for "does the model read the expression?": each example with the text of another
    expression of the same image that names a different object (the next such one in order, wrapping
    round), its target unchanged. Examples whose image has no such expression are left out."""
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_image[ex["expr"].image_id].append(i)
    out = []
    for i, ex in enumerate(examples):
        e = ex["expr"]
        others = [j for j in by_image[e.image_id] if not np.array_equal(examples[j]["expr"].gt_box, e.gt_box)]
        if others:
            j = next((j for j in others if j > i), others[0])
            out.append({**ex, "input_ids": examples[j]["input_ids"]})
    return out
