"""Read SNLI-VE in its published layout (``snli_ve_{train,dev,test}.jsonl``), validated line by line.

Each line is an SNLI record whose text premise was replaced by its Flickr30k image (necla-ml/SNLI-VE
README and ``snli_ve_generator.py``): ``pairID``, ``Flickr30K_ID`` (the image, ``"3416050480"`` for
``3416050480.jpg``), ``sentence2`` (the hypothesis), ``gold_label`` (``entailment`` / ``neutral`` /
``contradiction``), plus SNLI's ``sentence1`` (the caption, *not* model input in visual
entailment), ``captionID``, ``annotator_labels`` and the parses, kept in ``extra``.

The first bad record raises :class:`SNLIVEError` naming the file, the line, the ``pairID`` and the
field: not JSON, a missing field, an empty hypothesis, a ``gold_label`` missing or outside the three
classes (SNLI's ``"-"`` no-consensus label was removed by SNLI-VE), a repeated ``pairID``, or (given
``known_images``) an image without a region sample.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.tasks.jsonl import BadRecord, iter_json_lines

LABELS = ("entailment", "neutral", "contradiction")
SPLITS = ("train", "dev", "test")
FILE = "snli_ve_{split}.jsonl"
KNOWN_FIELDS = ("pairID", "Flickr30K_ID", "sentence2", "gold_label")


class SNLIVEError(ValueError):
    """SNLI-VE input that cannot be used; the message names the file, line, pairID and field."""


@dataclass(frozen=True)
class SNLIVEExample:
    pair_id: str
    image_id: str  # Flickr30K_ID, as a string (the file stem of the image)
    hypothesis: str
    label: str
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label_index(self) -> int:
        return LABELS.index(self.label)


def split_path(root: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise SNLIVEError(f"split must be one of {SPLITS}, got {split!r}")
    p = Path(root) / FILE.format(split=split)
    if not p.exists():
        raise SNLIVEError(f"{p}: no such file (expected SNLI-VE's {FILE.format(split=split)} in {root})")
    return p


def _problem(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return "the record is not a JSON object"
    if not isinstance(rec.get("pairID"), str) or not rec["pairID"]:
        return "field 'pairID' is missing or not a string"
    fid = rec.get("Flickr30K_ID")
    if not (isinstance(fid, str) and fid) and not (isinstance(fid, int) and not isinstance(fid, bool)):
        return "field 'Flickr30K_ID' is missing"
    if not isinstance(rec.get("sentence2"), str) or not rec["sentence2"].strip():
        return "field 'sentence2' (the hypothesis) is missing or empty"
    if "gold_label" not in rec:
        return "field 'gold_label' is missing"
    if rec["gold_label"] not in LABELS:
        return f"field 'gold_label' {rec['gold_label']!r} is not one of {LABELS}"
    return None


def _example(rec: Any) -> SNLIVEExample:
    why = _problem(rec)
    if why:
        raise BadRecord(why)
    return SNLIVEExample(rec["pairID"], str(rec["Flickr30K_ID"]), rec["sentence2"], rec["gold_label"], {k: v for k, v in rec.items() if k not in KNOWN_FIELDS})


def iter_snli_ve(path: str | Path, known_images: Mapping[str, str] | None = None, join_key: str = "") -> Iterator[SNLIVEExample]:
    """Validated examples in file order; ``known_images``: Flickr30K_ID → region image_id."""
    for where, ex in iter_json_lines(path, SNLIVEError, "pairID", _example):
        if known_images is not None and ex.image_id not in known_images:
            how = f" (joined by {join_key})" if join_key else ""
            raise SNLIVEError(f"{where}: field 'Flickr30K_ID' {ex.image_id!r} has no region sample{how}")
        yield ex


def read_snli_ve(path: str | Path, known_images: Mapping[str, str] | None = None, join_key: str = "") -> list[SNLIVEExample]:
    return list(iter_snli_ve(path, known_images, join_key))


def read_split(root: str | Path, split: str, known_images: Mapping[str, str] | None = None, join_key: str = "") -> list[SNLIVEExample]:
    return read_snli_ve(split_path(root, split), known_images, join_key)
