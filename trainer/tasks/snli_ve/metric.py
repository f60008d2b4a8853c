"""SNLI-VE accuracy, overall and per gold class (percent), the numbers visual-entailment papers report."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainer.tasks.snli_ve.reader import LABELS, SNLIVEError, SNLIVEExample


@dataclass(frozen=True)
class SNLIVEScores:
    accuracy: float
    per_class: dict[str, float]  # accuracy among examples of each gold class (classes present only)
    n: int


def evaluate(predictions: Mapping[str, str | int], examples: Sequence[SNLIVEExample], source: str = "predictions") -> SNLIVEScores:
    """Score ``{pairID: label name or index into LABELS}``; missing or unknown ids are errors."""
    known = {e.pair_id for e in examples}
    extra = sorted(set(predictions) - known)
    if extra:
        raise SNLIVEError(f"{source}: pairID {extra[0]}: not an evaluated example ({len(extra)} such)")
    right: dict[str, list[bool]] = {c: [] for c in LABELS}
    for e in examples:
        if e.pair_id not in predictions:
            raise SNLIVEError(f"{source}: pairID {e.pair_id}: no prediction")
        p = predictions[e.pair_id]
        if isinstance(p, int) and not isinstance(p, bool):
            if not 0 <= p < len(LABELS):
                raise SNLIVEError(f"{source}: pairID {e.pair_id}: class index {p} not in 0..{len(LABELS) - 1}")
            p = LABELS[p]
        elif p not in LABELS:
            raise SNLIVEError(f"{source}: pairID {e.pair_id}: {p!r} is not one of {LABELS}")
        right[e.label].append(p == e.label)
    n = sum(len(v) for v in right.values())
    if not n:
        raise SNLIVEError("nothing to evaluate (no examples)")
    return SNLIVEScores(100 * sum(sum(v) for v in right.values()) / n, {c: 100 * sum(v) / len(v) for c, v in right.items() if v}, n)
