"""VQA examples for the fine-tuning engine: tokenised question + the image's regions + soft target, and their batches."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Callable

import torch

from schemas.records import RegionRecord
from trainer.tasks.regions import collate_inputs, encoder_example
from trainer.tasks.vqa.reader import VQAError, VQAExample
from trainer.tasks.vqa.vocab import AnswerVocab, soft_target, target_tensor


def check_images(questions: Sequence[VQAExample], region_of: Mapping[int, str], source: str, key: str) -> None:
    """Every question's image must have a region sample; the error names the first question and image that do not."""
    missing = [e for e in questions if e.image_id not in region_of]
    if missing:
        images = sorted({e.image_id for e in missing})
        raise VQAError(
            f"{source}: question_id {missing[0].question_id}: image_id {missing[0].image_id} has no region sample (joined by {key}); "
            f"{len(missing)} question(s) of {len(images)} image(s) lack one, e.g. image ids {images[:5]}"
        )


def make_examples(questions: Sequence[VQAExample], regions: Mapping[str, RegionRecord], region_of: Mapping[int, str], tokenizer,
                  max_len: int, vocab: AnswerVocab) -> list[dict[str, Any]]:
    """Tokenised question, the image's region features (shared, not copied) and relative boxes, and the
    sparse soft target over ``vocab`` (empty for unannotated questions or answers outside it)."""
    out = []
    for e in questions:
        enc = encoder_example(e.question, regions[region_of[e.image_id]], tokenizer, max_len)
        out.append({"question": e, **enc, "target": soft_target(e.answers, vocab) if e.annotated else ([], [])})
    return out


def collate(examples: list[dict[str, Any]], num_answers: int) -> dict[str, torch.Tensor]:
    """Padded encoder inputs plus the dense soft targets ``[B, num_answers]``."""
    return {**collate_inputs(examples), "target": target_tensor([ex["target"] for ex in examples], num_answers)}


def collate_for(vocab: AnswerVocab) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    return partial(collate, num_answers=len(vocab))


def uncovered(examples: Sequence[dict[str, Any]]) -> list[int]:
    """Question ids whose ground truth has no answer in the vocabulary: no vocabulary model can score on them."""
    return [ex["question"].question_id for ex in examples if ex["question"].annotated and not ex["target"][0]]


def vocab_upper_bound(examples: Sequence[dict[str, Any]]) -> float:
    """Accuracy (percent) of always predicting each question's best vocabulary answer: the ceiling of a vocabulary model."""
    best = [max(ex["target"][1], default=0.0) for ex in examples if ex["question"].annotated]
    return 100.0 * float(sum(best)) / len(best) if best else float("nan")
