"""Stage-level guards: a stage that completed but produced nothing useful fails the run, with its reasons.

A stage's output stays on disk with its manifest and dead letters (so a rerun that accepts it, e.g.
``--max-reject 1``, costs nothing); only the run fails, with exit code 1 and a summary naming the
most common rejection reasons and the dead-letter file. The ``CURRENT`` pointers are not moved to
a failed stage's output, so a later step never picks it up.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

from ssga_io import fs
from pipelines.cli import StageFailed
from schemas.manifest import DEAD_LETTER_NAME

log = logging.getLogger("pipelines.stage_guard")
DEFAULT_MAX_REJECT = 0.5
TOP_REASONS = 3


def reason_kind(reason: str) -> str:
    """A reason with its particulars (numbers, box coordinates, quoted values) blanked, for counting."""
    r = re.sub(r"\[[^\]]*\]|\([^)]*\)", "(…)", reason)
    r = re.sub(r"'[^']*'", "'…'", r)
    return re.sub(r"(?<![\w/-])\d+(?:\.\d+)?(?![\w/])", "#", r)


def reasons_from_dead_letters(directory: str) -> Counter:
    path = fs.join(directory, DEAD_LETTER_NAME)
    if not fs.exists(path):
        return Counter()
    lines = fs.read_text(path).splitlines()
    return Counter(reason_kind(json.loads(line)["reason"]) for line in lines if line.strip())


def check_max_reject(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--max-reject must be a share between 0 and 1, got {value}")
    return value


def check_stage(
    stage: str,
    manifest: dict[str, Any],
    directory: str,
    max_reject: float = DEFAULT_MAX_REJECT,
    reasons: dict[str, int] | None = None,
    hint: str | dict[str, str] = "",
) -> None:
    """Raise :class:`StageFailed` when the stage output nothing or rejected more than ``max_reject`` of its input."""
    c = manifest["counts"]
    n_in, n_out, n_rej = c["in"], c["out"], c["rejected"]
    if n_in == 0:
        problem = "its input is empty (in=0 out=0)"
    elif n_out == 0:
        problem = f"it output nothing: all {n_in} records were rejected"
    elif n_rej / n_in > max_reject:
        problem = f"it rejected {n_rej} of {n_in} records ({n_rej / n_in:.0%}, more than the {max_reject:.0%} allowed by --max-reject)"
    else:
        return
    raise StageFailed(_summary(stage, problem, directory, reasons, hint))


def check_matches(stats: dict[str, Any], directory: str, hint: str = "") -> None:
    """The labels stage: phrases that exist but match no region at all are as useless as no output."""
    phrases = stats.get("phrases", 0)
    if phrases and not stats.get("positive_pairs", 0):
        raise StageFailed(_summary("labels", f"none of its {phrases} phrases matched any region", directory, {}, hint))


def _summary(stage: str, problem: str, directory: str, reasons: dict[str, int] | None, hint: str | dict[str, str]) -> str:
    """``hint``: a sentence, or ``{reason fragment: sentence}`` to add the sentences whose reason is among the top ones."""
    if reasons is None:
        reasons = reasons_from_dead_letters(directory)
    top = Counter(reasons).most_common(TOP_REASONS)
    if isinstance(hint, dict):
        hint = " ".join(h for fragment, h in hint.items() if any(fragment in r for r, _ in top))
    parts = [f"stage {stage}: {problem}"]
    if top:
        parts.append("top reasons: " + "; ".join(f"{n}x {r}" for r, n in top))
    if reasons:
        parts.append(f"dead letters: {fs.join(directory, DEAD_LETTER_NAME)}")
    if hint:
        parts.append(hint)
    return ". ".join(parts)


def warn_empty_shards(num_shards: int, images: int) -> None:
    if images < num_shards:
        log.warning("%d shards for %d images: %d shards will be empty (fine for the trainer, but --num-shards %d is enough)",
                    num_shards, images, num_shards - images, max(images, 1))
