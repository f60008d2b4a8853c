"""Record layouts shared by the pipelines and the trainer, with validators.

Validators return the *reason* a record is rejected (a short human sentence) or ``None``; callers
put that reason into the dead-letter output or into the error they raise, next to the record id.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.boxes import box_problem

# 1.1: label shards store iou as float32 (1.0: float16, still read); region samples may carry
# ``objects.npy``/``objects_conf.npy`` (a detector's top class, e.g. LXMERT's TSV) instead of ``cls.npy``.
SCHEMA_VERSION = "1.1"


@dataclass
class Caption:
    """One caption of one image (Conceptual Captions TSV row, Flickr30k sentence, ...)."""

    caption_id: str
    image_id: str
    text: str
    url: str = ""


@dataclass
class Phrase:
    """A noun phrase as a character span ``[start, end)`` of its caption."""

    text: str
    start: int
    end: int


@dataclass
class PhraseRecord:
    """All phrases of one caption (the ``phrases`` stage output, one Parquet row)."""

    caption_id: str
    image_id: str
    caption: str
    phrases: list[Phrase] = field(default_factory=list)


@dataclass
class TeacherBox:
    """One box the teacher proposes for phrase ``phrase_index`` of a caption (xyxy, exclusive)."""

    phrase_index: int
    box: tuple[float, float, float, float]
    score: float


@dataclass
class TeacherRecord:
    """The teacher's answer for one caption (the ``teacher`` stage output, one Parquet row)."""

    caption_id: str
    image_id: str
    teacher: str  # teacher fingerprint
    num_phrases: int
    boxes: list[TeacherBox] = field(default_factory=list)


@dataclass
class RegionRecord:
    """Detector regions of one image, in the project's convention (xyxy, exclusive end)."""

    image_id: str
    image_w: int
    image_h: int
    boxes: np.ndarray  # float32 [N, 4]
    features: np.ndarray  # [N, D]; float16 in shards
    cls_prob: np.ndarray | None = None  # [N, C] detector class distribution, if the source has it
    # A source with only the top class per region (LXMERT's TSV): int [N] 0-based into objects_vocab
    # (class objects+1 of cls_prob) and float [N] its probability; cls_prob is then objects_to_cls of them.
    objects: np.ndarray | None = None
    objects_conf: np.ndarray | None = None

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class ImageLabels:
    """Pseudo labels of one image: every caption's phrases against every detector region.

    Phrases of all captions are stacked in caption order, so row ``p`` of the matrices is the
    ``p``-th phrase overall; ``captions[i]["phrases"]`` says how many belong to caption ``i``.
    """

    image_id: str
    num_boxes: int
    iou_threshold: float
    captions: list[dict[str, Any]]  # [{caption_id, text, phrases: [{text, start, end}]}]
    align: np.ndarray  # uint8 [P, N], 1 where max IoU >= threshold
    iou: np.ndarray  # float32 [P, N], max IoU of the phrase's teacher boxes with the region (the value `align`
    # was thresholded on: float16 would round 0.4999 up to 0.5 and flip a re-thresholded pair)
    score: np.ndarray  # float16 [P, N], teacher confidence of the box giving that max IoU
    teacher: str = ""

    @property
    def num_phrases(self) -> int:
        return int(self.align.shape[0])


def objects_to_cls(objects: np.ndarray, conf: np.ndarray, num_classes: int) -> np.ndarray:
    """A detector's top class per region as a class distribution ``float32 [N, num_classes]``: the
    class (column ``objects + 1``; column 0 is the background) gets its confidence, the background
    the rest. The argmax over non-background classes and its probability are exactly what the
    source says; the mass the source does not report goes to the background."""
    objects = np.asarray(objects, np.int64)
    conf = np.clip(np.asarray(conf, np.float32), 0.0, 1.0)
    out = np.zeros((objects.shape[0], num_classes), np.float32)
    rows = np.arange(objects.shape[0])
    out[rows, 0] = 1.0 - conf
    out[rows, objects + 1] = conf
    return out


# --------------------------------------------------------------------------------------------
# Validators: return a reason string, or None when the record is fine.


def _id_problem(value: Any, name: str) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{name} must be a non-empty string, got {value!r}"
    if any(c in value for c in "\t\n\r"):
        return f"{name} {value!r} contains a tab or newline"
    return None


def caption_problem(c: Caption) -> str | None:
    return (
        _id_problem(c.caption_id, "caption_id")
        or _id_problem(c.image_id, "image_id")
        or (None if isinstance(c.text, str) and c.text.strip() else "caption text is empty")
    )


def phrases_problem(r: PhraseRecord) -> str | None:
    """Spans must lie inside the caption and match the phrase text."""
    p = _id_problem(r.caption_id, "caption_id") or _id_problem(r.image_id, "image_id")
    if p:
        return p
    n = len(r.caption)
    for i, ph in enumerate(r.phrases):
        if not (0 <= ph.start < ph.end <= n):
            return f"phrase {i} span [{ph.start}, {ph.end}) lies outside the caption of length {n}"
        if r.caption[ph.start : ph.end] != ph.text:
            return f"phrase {i} text {ph.text!r} differs from caption[{ph.start}:{ph.end}]"
    return None


def teacher_problem(r: TeacherRecord) -> str | None:
    for tb in r.boxes:  # plain floats, not NumPy: this runs per box of every caption (4x faster)
        if not (0 <= tb.phrase_index < r.num_phrases):
            return f"teacher box for phrase {tb.phrase_index} but the caption has {r.num_phrases}"
        b = [float(v) for v in tb.box]
        if len(b) != 4 or not all(map(math.isfinite, b)) or b[2] <= b[0] or b[3] <= b[1]:
            return f"teacher box {list(tb.box)} is not a finite xyxy box with positive area"
        if not math.isfinite(tb.score):
            return f"teacher score {tb.score} is not finite"
    return None


def _nonfinite_or_negative(a: np.ndarray, negative: bool) -> bool:
    """Any NaN or ±Inf in ``a`` (or, with ``negative``, any value below zero).

    Shards store features and class distributions as float16, whose maths NumPy emulates: ``isfinite``
    and ``< 0`` on a detector's [36, 1601] float16 matrix made this check a sixth of a loader worker's
    time in a profile (``scripts/loader_ab.py`` measures the loader before and after). So float16 is tested on its bits, in two integer
    reductions: exponent all ones (NaN, Inf), or sign bit set on a non-zero value (``-0.0`` is not negative)."""
    if a.dtype != np.float16:
        return bool(not np.all(np.isfinite(a)) or (negative and np.any(a < 0)))
    if a.size == 0:
        return False
    bits = np.ascontiguousarray(a).view(np.uint16)
    return bool((bits & 0x7FFF).max() >= 0x7C00 or (negative and bits.max() > 0x8000))


def region_problem(r: RegionRecord) -> str | None:
    """Everything the region shards promise: shapes agree, values finite, boxes inside the image."""
    p = _id_problem(r.image_id, "image_id")
    if p:
        return p
    if not (isinstance(r.image_w, (int, np.integer)) and isinstance(r.image_h, (int, np.integer))):
        return f"image size {r.image_w!r}x{r.image_h!r} is not integral"
    if r.image_w <= 0 or r.image_h <= 0:
        return f"image size {r.image_w}x{r.image_h} is not positive"
    if r.boxes.ndim != 2 or r.boxes.shape[1] != 4:
        return f"boxes have shape {tuple(r.boxes.shape)}, expected [N, 4]"
    n = r.boxes.shape[0]
    if n == 0:
        return "image has no regions"
    if r.features.ndim != 2 or r.features.shape[0] != n:
        return f"features have shape {tuple(r.features.shape)} but there are {n} boxes"
    if r.features.dtype == np.float16:  # as shards store them: float16 cannot overflow itself
        if _nonfinite_or_negative(r.features, negative=False):
            return "features contain NaN or Inf"
    else:
        if not np.all(np.isfinite(r.features)):
            return "features contain NaN or Inf"
        if np.any(np.abs(r.features) > np.finfo(np.float16).max):
            return "features overflow float16"
    if r.cls_prob is not None:
        if r.cls_prob.ndim != 2 or r.cls_prob.shape[0] != n:
            return f"cls_prob has shape {tuple(r.cls_prob.shape)} but there are {n} boxes"
        if _nonfinite_or_negative(r.cls_prob, negative=True):
            return "cls_prob contains negative, NaN or Inf values"
    if r.objects is not None:
        if r.cls_prob is None or r.objects_conf is None:
            return "objects without objects_conf and the class distribution built from them"
        if r.objects.shape != (n,) or r.objects_conf.shape != (n,):
            return f"objects/objects_conf have shapes {tuple(r.objects.shape)}/{tuple(r.objects_conf.shape)} but there are {n} boxes"
        c = r.cls_prob.shape[1] - 1
        bad = r.objects[(r.objects < 0) | (r.objects >= c)]
        if bad.size:
            return f"objects_id {int(bad[0])} lies outside the {c}-class vocabulary (0-based; give the right objects_vocab.txt)"
        if not np.all(np.isfinite(r.objects_conf)) or np.any((r.objects_conf < 0) | (r.objects_conf > 1)):
            return "objects_conf holds values outside [0, 1]"
    return box_problem(r.boxes, r.image_w, r.image_h)


def labels_problem(lab: ImageLabels) -> str | None:
    p_total = sum(len(c["phrases"]) for c in lab.captions)
    for name in ("align", "iou", "score"):
        m = getattr(lab, name)
        if m.shape != (p_total, lab.num_boxes):
            return f"{name} has shape {tuple(m.shape)}, expected ({p_total}, {lab.num_boxes})"
    for c in lab.captions:
        r = PhraseRecord(c["caption_id"], lab.image_id, c["text"], [Phrase(**p) for p in c["phrases"]])
        reason = phrases_problem(r)
        if reason:
            return f"caption {c['caption_id']}: {reason}"
    return None
