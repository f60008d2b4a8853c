"""The answer vocabulary and the soft targets a VQA classifier trains on.

**Vocabulary** (the field's convention, bottom-up-attention-vqa ``tools/compute_softscore.py`` as
ViLBERT, LXMERT and UNITER use it): every question's ``multiple_choice_answer`` in the normalised
form the metric compares (:func:`~trainer.tasks.vqa.answers.normalize_answer`), counted once per
question; answers of at least ``min_count`` = 9 questions are kept. On VQA 2.0 train2014 + val2014
that gives the 3,129 answers. ``source="answers"`` counts all ten answers instead. Order: most
frequent first, ties alphabetical, so a vocabulary is a pure function of its inputs.

**Soft targets**: the target of vocabulary answer ``v`` for a question is *the official accuracy the
model would get by predicting v* (:func:`~trainer.tasks.vqa.answers.question_accuracy`): the
leave-one-out mean of ``min(1, matches/3)`` against the ground truth as the evaluation processes
it. For ten answers this equals the common ``min(1, 0.3 * count)`` exactly (count 1, 2, 3, >=4 →
0.3, 0.6, 0.9, 1.0); computing it through the metric also keeps the evaluation's quirks (the
ground truth is punctuation-processed only when the ten disagree), so the target never rewards an
answer the metric would score 0, nor the reverse. A question whose answers are all outside the
vocabulary gets an all-zero target (it still counts at evaluation, as in the official metric).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.tasks.vqa.answers import ground_truth_forms, leave_one_out_score, normalize_answer
from trainer.tasks.vqa.reader import VQAError, VQAExample

MIN_COUNT = 9  # answers of >= 9 questions: 3,129 answers on VQA 2.0 train+val
SOURCES = ("multiple_choice_answer", "answers")
VOCAB_VERSION = 1


@dataclass(frozen=True)
class AnswerVocab:
    answers: tuple[str, ...]
    counts: tuple[int, ...] = ()
    min_count: int = MIN_COUNT
    source: str = SOURCES[0]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _by_form: dict[str, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.answers)) != len(self.answers):
            raise ValueError("answer vocabulary has repeated answers")
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(self.answers)})
        by_form: dict[str, list[int]] = defaultdict(list)
        for i, a in enumerate(self.answers):
            by_form[normalize_answer(a)].append(i)  # what the metric compares when the model says ``a``
        object.__setattr__(self, "_by_form", dict(by_form))

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int | None:
        return self._index.get(answer)

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.answers[int(i)] for i in indices]

    def save(self, path: str | Path) -> None:
        doc = {"version": VOCAB_VERSION, "source": self.source, "min_count": self.min_count, "answers": list(self.answers), "counts": list(self.counts)}
        Path(path).write_text(json.dumps(doc, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "AnswerVocab":
        try:
            doc = json.loads(Path(path).read_text())
            return cls(tuple(doc["answers"]), tuple(doc.get("counts", ())), int(doc["min_count"]), str(doc["source"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise VQAError(f"{path}: not an answer vocabulary written by AnswerVocab.save ({e})") from e


def build_answer_vocab(examples: Iterable[VQAExample], min_count: int = MIN_COUNT, source: str = SOURCES[0]) -> AnswerVocab:
    """Answers of at least ``min_count`` questions (each question counts an answer once)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts: Counter[str] = Counter()
    for e in examples:
        if not e.annotated:
            raise VQAError(f"question_id {e.question_id}: has no annotation; build the vocabulary from annotated splits")
        raw = [e.multiple_choice_answer] if source == "multiple_choice_answer" else e.answers
        counts.update({normalize_answer(a) for a in raw} - {""})
    kept = sorted(((a, c) for a, c in counts.items() if c >= min_count), key=lambda ac: (-ac[1], ac[0]))
    if not kept:
        raise VQAError(f"no answer occurs in {min_count} or more questions; lower min_count")
    return AnswerVocab(tuple(a for a, _ in kept), tuple(c for _, c in kept), min_count, source)


def soft_target(answers: Sequence[str], vocab: AnswerVocab) -> tuple[list[int], list[float]]:
    """Sparse target of one question: vocabulary indices and their scores (> 0), ascending by index."""
    forms = ground_truth_forms(answers)
    out: dict[int, float] = {}
    for form in set(forms):
        for i in vocab._by_form.get(form, ()):
            out[i] = leave_one_out_score(forms, form)
    idx = sorted(out)
    return idx, [out[i] for i in idx]


def target_tensor(targets: Sequence[tuple[Sequence[int], Sequence[float]]], num_answers: int) -> torch.Tensor:
    """Dense float32 ``[B, num_answers]`` from a batch of sparse targets (what the loader collates)."""
    out = torch.zeros(len(targets), num_answers, dtype=torch.float32)
    for row, (idx, scores) in enumerate(targets):
        if len(idx):
            out[row, torch.as_tensor(list(idx), dtype=torch.long)] = torch.as_tensor(list(scores), dtype=torch.float32)
    return out
