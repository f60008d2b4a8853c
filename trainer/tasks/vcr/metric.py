"""VCR accuracies: Q→A, QA→R and Q→AR (percent), as the VCR paper and leaderboard report them.

Q→A: the predicted answer is the labelled one. QA→R: the predicted rationale is the labelled one,
the model having been given the *correct* answer (r2c's rationale mode, the standard validation
protocol). Q→AR: both right for the same question, so Q→AR ≤ min(Q→A, QA→R); a chance model gets
25 / 25 / 6.25. Predictions are choice indices (or per-choice scores, arg-maxed, first max wins).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainer.tasks.vcr.reader import NUM_CHOICES, VCRError, VCRExample

Prediction = int | Sequence[float]


@dataclass(frozen=True)
class VCRScores:
    q2a: float
    qa2r: float
    q2ar: float
    n: int


def _choice(p: Prediction, where: str) -> int:
    if isinstance(p, int) and not isinstance(p, bool):
        if not 0 <= p < NUM_CHOICES:
            raise VCRError(f"{where}: predicted choice {p} is not in 0..{NUM_CHOICES - 1}")
        return p
    scores = [float(s) for s in p]
    if len(scores) != NUM_CHOICES:
        raise VCRError(f"{where}: {len(scores)} scores, expected one per choice ({NUM_CHOICES})")
    return max(range(NUM_CHOICES), key=lambda i: (scores[i], -i))


def evaluate(answers: Mapping[str, Prediction], rationales: Mapping[str, Prediction], examples: Sequence[VCRExample]) -> VCRScores:
    """Score predictions keyed by ``annot_id``; every example needs both predictions, and no extra ids."""
    known = {e.annot_id for e in examples}
    for name, preds in (("answer", answers), ("rationale", rationales)):
        extra = sorted(set(preds) - known)
        if extra:
            raise VCRError(f"{name} predictions: annot_id {extra[0]}: not an evaluated question ({len(extra)} such)")
    a_ok = r_ok = both = 0
    for e in examples:
        if not e.labelled:
            raise VCRError(f"annot_id {e.annot_id}: has no labels (test cannot be scored locally)")
        for name, preds in (("answer", answers), ("rationale", rationales)):
            if e.annot_id not in preds:
                raise VCRError(f"{name} predictions: annot_id {e.annot_id}: no prediction")
        a = _choice(answers[e.annot_id], f"annot_id {e.annot_id} answer") == e.answer_label
        r = _choice(rationales[e.annot_id], f"annot_id {e.annot_id} rationale") == e.rationale_label
        a_ok += a
        r_ok += r
        both += a and r
    n = len(examples)
    if not n:
        raise VCRError("nothing to evaluate (no examples)")
    return VCRScores(100 * a_ok / n, 100 * r_ok / n, 100 * both / n, n)
