"""Prior baselines for VQA: the most common training answer per answer type (or question type).

The VQA paper's "prior (yes)" and "per Q-type prior" baselines, for setting a model's accuracy beside
what the answer distribution alone gives. Answers are counted as ``multiple_choice_answer`` (the
most frequent of the ten) in the normalised form the metric compares; ties go to the
alphabetically first answer, so the baseline is deterministic.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from trainer.tasks.vqa.answers import normalize_answer
from trainer.tasks.vqa.reader import VQAError, VQAExample

GROUPINGS = ("answer_type", "question_type")


def majority_answers(train: Iterable[VQAExample], by: str = "answer_type") -> dict[str, str]:
    """``{group: most common answer}``, plus ``""`` → the most common answer overall (the fallback)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, got {by!r}")
    counts: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        if not e.annotated:
            raise VQAError(f"question_id {e.question_id}: has no annotation; the baseline needs annotated training questions")
        a = normalize_answer(e.multiple_choice_answer)
        counts[getattr(e, by)][a] += 1
        counts[""][a] += 1
    if not counts:
        raise VQAError("no training questions to take the majority answers from")
    return {g: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in counts.items()}


def majority_predictions(train: Iterable[VQAExample], questions: Sequence[VQAExample], by: str = "answer_type") -> dict[int, str]:
    """``{question_id: answer}`` predicting each question's group majority (overall majority for unseen groups).
    Grouping by answer type reads the evaluated questions' annotations (an oracle on the type)."""
    best = majority_answers(train, by)
    return {e.question_id: best.get(getattr(e, by), best[""]) for e in questions}
