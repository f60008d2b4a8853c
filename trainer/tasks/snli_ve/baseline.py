"""Majority baseline for SNLI-VE: always the most frequent training class (ties: LABELS order).
SNLI-VE is nearly balanced, so this sits near 33%."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from trainer.tasks.snli_ve.reader import LABELS, SNLIVEError, SNLIVEExample


def majority_label(train: Iterable[SNLIVEExample]) -> str:
    counts = Counter(e.label for e in train)
    if not counts:
        raise SNLIVEError("no training examples to take the majority label from")
    return min(LABELS, key=lambda c: (-counts[c], LABELS.index(c)))


def majority_predictions(train: Iterable[SNLIVEExample], examples: Sequence[SNLIVEExample]) -> dict[str, str]:
    label = majority_label(train)
    return {e.pair_id: label for e in examples}
