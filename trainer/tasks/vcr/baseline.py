"""Majority baseline for VCR: always the choice position most often correct in training.

VCR's answers were matched adversarially and shuffled, so this sits near 25 / 25 / 6.25; it is the
floor a model must clear. Ties go to the lowest position, so the baseline is deterministic.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from trainer.tasks.vcr.reader import NUM_CHOICES, VCRError, VCRExample


def majority_positions(train: Iterable[VCRExample]) -> tuple[int, int]:
    """``(answer position, rationale position)`` most often labelled correct in ``train``."""
    a: Counter[int] = Counter()
    r: Counter[int] = Counter()
    for e in train:
        if not e.labelled:
            raise VCRError(f"annot_id {e.annot_id}: has no labels; the baseline needs labelled training questions")
        a[e.answer_label] += 1
        r[e.rationale_label] += 1
    if not a:
        raise VCRError("no training questions to take the majority positions from")
    best = lambda c: min(range(NUM_CHOICES), key=lambda i: (-c[i], i))  # noqa: E731
    return best(a), best(r)


def majority_predictions(train: Iterable[VCRExample], questions: Sequence[VCRExample]) -> tuple[dict[str, int], dict[str, int]]:
    """``({annot_id: answer}, {annot_id: rationale})`` for :func:`trainer.tasks.vcr.metric.evaluate`."""
    pa, pr = majority_positions(train)
    return {e.annot_id: pa for e in questions}, {e.annot_id: pr for e in questions}
