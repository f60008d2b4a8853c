"""Majority baseline for NLVR2: always the more frequent training label (ties → True)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from trainer.tasks.nlvr2.reader import NLVR2Error, NLVR2Example


def majority_label(train: Iterable[NLVR2Example]) -> bool:
    n_true = n = 0
    for e in train:
        if e.label is None:
            raise NLVR2Error(f"identifier {e.identifier}: has no label; the baseline needs labelled training examples")
        n_true += e.label
        n += 1
    if not n:
        raise NLVR2Error("no training examples to take the majority label from")
    return 2 * n_true >= n


def majority_predictions(train: Iterable[NLVR2Example], examples: Sequence[NLVR2Example]) -> dict[str, bool]:
    label = majority_label(train)
    return {e.identifier: label for e in examples}
