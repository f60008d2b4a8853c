"""Read NLVR2 in its published layout (``train.json``, ``dev.json``, ``test1.json``: one JSON object
per line, despite the extension), validated line by line.

Fields used (lil-lab/nlvr ``nlvr2/README.md``; ``nlvr2/eval/metrics.py`` reads ``identifier`` and
``label``): ``identifier`` ``"<split>-<set>-<pair>-<sentence>"`` (``"dev-850-0-0"``), ``sentence``,
``label`` ``"True"`` / ``"False"``. The two images are ``<identifier without its last part>-img0``
and ``-img1`` (``dev-850-0-img0``; LXMERT's ``process_dataset.py`` builds them the same way); their
file names add ``.png``. Other fields (``directory``, ``left_url``, ``synset``, ``writer``, ...) are
kept in ``extra``.

The first bad record raises :class:`NLVR2Error` naming the file, the line, the identifier and the
field: not JSON, a missing or malformed identifier, an empty sentence, a label missing or other than
"True"/"False", a repeated identifier, or (given ``known_images``) an image without a region sample.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.tasks.jsonl import BadRecord, iter_json_lines

SPLIT_FILES = {"train": "train.json", "dev": "dev.json", "test1": "test1.json", "test2": "test2.json"}
LABELS = {"True": True, "False": False}
IDENTIFIER = re.compile(r"^[A-Za-z0-9_]+-\d+-\d+-\d+$")
KNOWN_FIELDS = ("identifier", "sentence", "label")


class NLVR2Error(ValueError):
    """NLVR2 input that cannot be used; the message names the file, line, identifier and field."""


@dataclass(frozen=True)
class NLVR2Example:
    identifier: str
    sentence: str
    label: bool | None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def image_stem(self) -> str:
        return self.identifier.rsplit("-", 1)[0]

    @property
    def images(self) -> tuple[str, str]:
        """The left and right image stems (``dev-850-0-img0``, ``dev-850-0-img1``)."""
        return f"{self.image_stem}-img0", f"{self.image_stem}-img1"

    @property
    def consistency_key(self) -> str:
        """The official consistency group: the identifier with its pair part blanked (``dev-850--0``):
        one sentence over the image pairs of its set."""
        parts = self.identifier.split("-")
        parts[2] = ""
        return "-".join(parts)


def split_path(root: str | Path, split: str) -> Path:
    if split not in SPLIT_FILES:
        raise NLVR2Error(f"split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
    p = Path(root) / SPLIT_FILES[split]
    if not p.exists():
        raise NLVR2Error(f"{p}: no such file (expected NLVR2's {SPLIT_FILES[split]} in {root})")
    return p


def _problem(rec: Any, labelled: bool) -> str | None:
    if not isinstance(rec, dict):
        return "the record is not a JSON object"
    ident = rec.get("identifier")
    if not isinstance(ident, str) or not IDENTIFIER.match(ident):
        return f"field 'identifier' {ident!r} is not <split>-<set>-<pair>-<sentence>"
    if not isinstance(rec.get("sentence"), str) or not rec["sentence"].strip():
        return "field 'sentence' is missing or empty"
    if "label" not in rec:
        return "field 'label' is missing (a labelled split needs it)" if labelled else None
    if rec["label"] not in LABELS:
        return f"field 'label' {rec['label']!r} is not \"True\" or \"False\""
    return None


def _example(rec: Any, labelled: bool) -> NLVR2Example:
    why = _problem(rec, labelled)
    if why:
        raise BadRecord(why)
    return NLVR2Example(rec["identifier"], rec["sentence"], LABELS.get(rec.get("label")), {k: v for k, v in rec.items() if k not in KNOWN_FIELDS})


def iter_nlvr2(path: str | Path, labelled: bool = True, known_images: Mapping[str, str] | None = None, join_key: str = "") -> Iterator[NLVR2Example]:
    """Validated examples in file order; ``known_images``: image stem → region image_id."""
    for where, ex in iter_json_lines(path, NLVR2Error, "identifier", lambda rec: _example(rec, labelled)):
        if known_images is not None:
            for img in ex.images:
                if img not in known_images:
                    how = f" (joined by {join_key})" if join_key else ""
                    raise NLVR2Error(f"{where}: field 'identifier' names image {img!r}, which has no region sample{how}")
        yield ex


def read_nlvr2(path: str | Path, labelled: bool = True, known_images: Mapping[str, str] | None = None, join_key: str = "") -> list[NLVR2Example]:
    return list(iter_nlvr2(path, labelled, known_images, join_key))


def read_split(root: str | Path, split: str, known_images: Mapping[str, str] | None = None, join_key: str = "") -> list[NLVR2Example]:
    """``read_nlvr2`` on the published file of ``split`` (test2, unreleased labels, read unlabelled)."""
    return read_nlvr2(split_path(root, split), split != "test2", known_images, join_key)


def image_names(examples: list[NLVR2Example]) -> list[str]:
    """Every image stem the examples use (for :func:`trainer.tasks.vcr.join.join_image_names`)."""
    return sorted({img for e in examples for img in e.images})
