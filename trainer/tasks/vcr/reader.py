"""Read VCR in its published layout (``train.jsonl`` / ``val.jsonl`` / ``test.jsonl``), validated line by line.

One JSON object per line (rowanz/r2c ``dataloaders/vcr.py`` reads them with ``json.loads`` per line).
The fields used here: ``annot_id``, ``img_fn``, ``metadata_fn``, ``objects`` (the detected objects'
class names, e.g. ``["person", "person", "car"]``), ``question``, ``answer_choices`` (4),
``rationale_choices`` (4), ``answer_label`` and ``rationale_label`` (0..3; absent from test). Every
text is a token list in which a *list of integers* refers to detected objects by index into
``objects``: ``["Does", [2], "feel", "comfortable", "?"]``. Other fields (``movie``,
``question_orig``, ``answer_match_iter``, ...) are kept in ``extra`` untouched.

The first bad record raises :class:`VCRError` naming the file, the line, the ``annot_id`` and the
field: not JSON, a missing or mistyped field, not exactly four choices, a label missing or outside
0..3, an object reference out of range of ``objects``, a repeated ``annot_id``, or (given
``known_images``) an image without a region sample.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.image_ids import file_stem
from trainer.tasks.jsonl import BadRecord, iter_json_lines

SPLITS = ("train", "val", "test")
NUM_CHOICES = 4
Token = str | tuple[int, ...]  # a word, or the indices of the objects it refers to
KNOWN_FIELDS = ("annot_id", "img_fn", "metadata_fn", "objects", "question", "answer_choices", "rationale_choices", "answer_label", "rationale_label")


class VCRError(ValueError):
    """VCR input that cannot be used; the message names the file, line, annot_id and field."""


@dataclass(frozen=True)
class VCRExample:
    annot_id: str
    img_fn: str
    metadata_fn: str
    objects: tuple[str, ...]
    question: tuple[Token, ...]
    answer_choices: tuple[tuple[Token, ...], ...]
    rationale_choices: tuple[tuple[Token, ...], ...]
    answer_label: int | None = None
    rationale_label: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def labelled(self) -> bool:
        return self.answer_label is not None and self.rationale_label is not None

    @property
    def image_stem(self) -> str:
        """The image's file stem (how region samples of VCR images are named)."""
        return file_stem(self.img_fn)


def split_path(root: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise VCRError(f"split must be one of {SPLITS}, got {split!r}")
    p = Path(root) / f"{split}.jsonl"
    if not p.exists():
        raise VCRError(f"{p}: no such file (expected VCR's {split}.jsonl in {root})")
    return p


def _tokens(value: Any, num_objects: int, name: str) -> tuple[Token, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad(name, "is not a non-empty token list")
    out: list[Token] = []
    for k, tok in enumerate(value):
        if isinstance(tok, str):
            out.append(tok)
        elif isinstance(tok, list) and tok and all(isinstance(i, int) and not isinstance(i, bool) for i in tok):
            bad = [i for i in tok if not 0 <= i < num_objects]
            if bad:
                raise _Bad(name, f"token #{k} refers to object {bad[0]}, out of range of the {num_objects} objects")
            out.append(tuple(tok))
        else:
            raise _Bad(name, f"token #{k} {tok!r} is neither a word nor a non-empty list of object indices")
    return tuple(out)


class _Bad(BadRecord):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"field {field_name!r} {reason}")


def _label(rec: dict, name: str, labelled: bool) -> int | None:
    if name not in rec:
        if labelled:
            raise _Bad(name, "is missing (a labelled split needs it; read test.jsonl with labelled=False)")
        return None
    v = rec[name]
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < NUM_CHOICES:
        raise _Bad(name, f"{v!r} is not an integer in 0..{NUM_CHOICES - 1}")
    return v


def parse_record(rec: Any, labelled: bool = True) -> VCRExample:
    """One validated record; raises ``_Bad`` (wrapped by the caller with file and line)."""
    if not isinstance(rec, dict):
        raise _Bad("<record>", "is not a JSON object")
    for name in ("annot_id", "img_fn", "metadata_fn"):
        if not isinstance(rec.get(name), str) or not rec[name]:
            raise _Bad(name, "is missing or not a non-empty string")
    objects = rec.get("objects")
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise _Bad("objects", "is missing or not a list of class names")
    n = len(objects)
    question = _tokens(rec.get("question"), n, "question")
    choices = {}
    for name in ("answer_choices", "rationale_choices"):
        v = rec.get(name)
        if not isinstance(v, list) or len(v) != NUM_CHOICES:
            raise _Bad(name, f"is not a list of exactly {NUM_CHOICES} choices")
        choices[name] = tuple(_tokens(c, n, f"{name}[{i}]") for i, c in enumerate(v))
    return VCRExample(
        annot_id=rec["annot_id"], img_fn=rec["img_fn"], metadata_fn=rec["metadata_fn"], objects=tuple(objects),
        question=question, answer_choices=choices["answer_choices"], rationale_choices=choices["rationale_choices"],
        answer_label=_label(rec, "answer_label", labelled), rationale_label=_label(rec, "rationale_label", labelled),
        extra={k: v for k, v in rec.items() if k not in KNOWN_FIELDS},
    )


def iter_vcr(path: str | Path, labelled: bool = True, known_images: Mapping[str, str] | None = None, join_key: str = "") -> Iterator[VCRExample]:
    """Validated examples in file order. ``known_images``: image file stem → region image_id (from
    :func:`trainer.tasks.vcr.join.join_image_names`); ``join_key`` names the key in errors."""
    for where, ex in iter_json_lines(path, VCRError, "annot_id", lambda rec: parse_record(rec, labelled)):
        if known_images is not None and ex.image_stem not in known_images:
            how = f" (joined by {join_key})" if join_key else ""
            raise VCRError(f"{where}: field 'img_fn' {ex.img_fn!r} has no region sample{how}")
        yield ex


def read_vcr(path: str | Path, labelled: bool = True, known_images: Mapping[str, str] | None = None, join_key: str = "") -> list[VCRExample]:
    """All examples of a VCR jsonl file; see :func:`iter_vcr`."""
    return list(iter_vcr(path, labelled, known_images, join_key))


def read_split(root: str | Path, split: str, known_images: Mapping[str, str] | None = None, join_key: str = "") -> list[VCRExample]:
    """``read_vcr`` on ``<root>/<split>.jsonl`` (test is read unlabelled)."""
    return read_vcr(split_path(root, split), split != "test", known_images, join_key)
