"""NLVR2 accuracy and consistency, as lil-lab/nlvr ``nlvr2/eval/metrics.py`` computes them.

Accuracy ("precision" in the script): share of examples whose predicted label equals the gold one.
Consistency: examples are grouped by the identifier with its third part (the image pair) blanked,
i.e. one sentence of one set over the image pairs it was paired with; a group counts when every
prediction in it is right. The official script reads predictions as CSV lines ``identifier,True``
(compared case-insensitively); :func:`read_predictions` reads that file. Percent here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.tasks.nlvr2.reader import NLVR2Error, NLVR2Example


@dataclass(frozen=True)
class NLVR2Scores:
    accuracy: float
    consistency: float
    n: int
    groups: int


def evaluate(predictions: Mapping[str, bool], examples: Sequence[NLVR2Example], source: str = "predictions") -> NLVR2Scores:
    """Score ``{identifier: predicted bool}``; a missing or unknown identifier is an error."""
    known = {e.identifier for e in examples}
    extra = sorted(set(predictions) - known)
    if extra:
        raise NLVR2Error(f"{source}: identifier {extra[0]}: not an evaluated example ({len(extra)} such)")
    consistent: dict[str, bool] = {}
    correct = 0
    for e in examples:
        if e.label is None:
            raise NLVR2Error(f"identifier {e.identifier}: has no label (cannot be scored locally)")
        if e.identifier not in predictions:
            raise NLVR2Error(f"{source}: identifier {e.identifier}: no prediction")
        ok = bool(predictions[e.identifier]) == e.label
        correct += ok
        consistent[e.consistency_key] = consistent.get(e.consistency_key, True) and ok
    if not examples:
        raise NLVR2Error("nothing to evaluate (no examples)")
    return NLVR2Scores(100 * correct / len(examples), 100 * sum(consistent.values()) / len(consistent), len(examples), len(consistent))


def read_predictions(path: str | Path) -> dict[str, bool]:
    """The official predictions CSV (``identifier,True|False`` per line) → ``{identifier: bool}``."""
    out: dict[str, bool] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) != 2 or parts[1].strip().lower() not in ("true", "false"):
            raise NLVR2Error(f"{path}:{lineno}: expected 'identifier,True' or 'identifier,False', got {line!r}")
        if parts[0] in out:
            raise NLVR2Error(f"{path}:{lineno}: identifier {parts[0]}: predicted twice")
        out[parts[0]] = parts[1].strip().lower() == "true"
    return out


def write_predictions(path: str | Path, predictions: Mapping[str, bool]) -> None:
    Path(path).write_text("".join(f"{k},{'True' if v else 'False'}\n" for k, v in sorted(predictions.items())))
