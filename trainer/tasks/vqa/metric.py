"""VQA accuracy over a split: overall, per answer type and per question type, as the official
``VQAEval.evaluate`` reports it, and the prediction file it reads.

A prediction file is the official results format: a JSON list of ``{"question_id": int, "answer": str}``.
As in the official ``VQA.loadRes``, its question ids must be exactly the evaluated ones: an unknown
id, a repeated id or a missing prediction is an error naming the file and the question id (pass
``allow_missing=True`` to score a subset, like ``evaluate(quesIds)``). Any answer string is scored:
one outside the answer vocabulary simply matches no ground truth, as officially; ground-truth
answers outside the vocabulary still count (such questions cap what a vocabulary model can score).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer.tasks.vqa.answers import question_accuracy
from trainer.tasks.vqa.reader import VQAError, VQAExample

OFFICIAL_DIGITS = 2  # VQAEval(n=2): percentages rounded to 2 decimals


@dataclass
class VQAScores:
    """Accuracies in percent (unrounded); ``per_question`` in 0..1 as the leave-one-out mean."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[int, float] = field(repr=False)
    n: int = 0

    def official(self, digits: int = OFFICIAL_DIGITS) -> dict:
        """The official ``VQAEval.accuracy`` dict (percent, rounded)."""
        return {
            "overall": round(self.overall, digits),
            "perQuestionType": {k: round(v, digits) for k, v in self.per_question_type.items()},
            "perAnswerType": {k: round(v, digits) for k, v in self.per_answer_type.items()},
        }


def _percent(values: list[float]) -> float:
    return 100 * float(sum(values)) / len(values)  # the official expression, before its round()


def evaluate(predictions: Mapping[int, str], examples: Sequence[VQAExample], allow_missing: bool = False, source: str = "predictions") -> VQAScores:
    """Score ``{question_id: answer}`` against annotated ``examples`` (question-file order kept)."""
    known = {e.question_id for e in examples}
    unknown = [q for q in predictions if q not in known]
    if unknown:
        raise VQAError(f"{source}: question_id {unknown[0]}: not a question of the evaluated split ({len(unknown)} such, e.g. {unknown[:5]})")
    missing = [e.question_id for e in examples if e.question_id not in predictions]
    if missing and not allow_missing:
        raise VQAError(f"{source}: question_id {missing[0]}: no prediction ({len(missing)} of {len(examples)} questions lack one, e.g. {missing[:5]})")
    per_q: dict[int, float] = {}
    by_ans: dict[str, list[float]] = defaultdict(list)
    by_qtype: dict[str, list[float]] = defaultdict(list)
    for e in examples:
        if e.question_id not in predictions:
            continue
        if not e.annotated:
            raise VQAError(f"question_id {e.question_id}: has no ground-truth answers (a test split cannot be scored locally)")
        acc = question_accuracy(predictions[e.question_id], e.answers)
        per_q[e.question_id] = acc
        by_ans[e.answer_type].append(acc)
        by_qtype[e.question_type].append(acc)
    if not per_q:
        raise VQAError(f"{source}: nothing to evaluate (no question has a prediction)")
    return VQAScores(
        overall=_percent(list(per_q.values())),
        per_answer_type={k: _percent(v) for k, v in by_ans.items()},
        per_question_type={k: _percent(v) for k, v in by_qtype.items()},
        per_question=per_q,
        n=len(per_q),
    )


def read_predictions(path: str | Path) -> dict[int, str]:
    """The official results file → ``{question_id: answer}``; bad entries name the file and entry."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except json.JSONDecodeError as e:
        raise VQAError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(items, list):
        raise VQAError(f"{path}: results must be a JSON list of {{question_id, answer}} objects")
    out: dict[int, str] = {}
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("question_id"), int) or isinstance(item.get("question_id"), bool):
            raise VQAError(f"{path}: entry #{k} lacks an integer question_id")
        qid = item["question_id"]
        if not isinstance(item.get("answer"), str):
            raise VQAError(f"{path}: question_id {qid}: answer must be a string, got {item.get('answer')!r}")
        if qid in out:
            raise VQAError(f"{path}: question_id {qid}: predicted twice")
        out[qid] = item["answer"]
    return out


def write_predictions(path: str | Path, predictions: Mapping[int, str]) -> None:
    """Write ``{question_id: answer}`` in the official results format (sorted by question id)."""
    Path(path).write_text(json.dumps([{"question_id": int(q), "answer": a} for q, a in sorted(predictions.items())]) + "\n")


def evaluate_file(path: str | Path, examples: Sequence[VQAExample], allow_missing: bool = False) -> VQAScores:
    return evaluate(read_predictions(path), examples, allow_missing, source=str(path))
