"""Detector-region file formats users already have: field layouts and the byte-level codecs.

Readers (:mod:`pipelines.formats.readers`) and writers (:mod:`pipelines.formats.writers`) share these constants, so a
format has one definition. The formats:

* bottom-up-attention TSV (``generate_tsv.py``): no header, fields :data:`BUTD_FIELDS`; ``boxes`` and
  ``features`` are base64 float32 (``num_boxes x 4`` and ``num_boxes x D``); boxes are *inclusive*
  pixel indices (py-faster-rcnn convention).
* LXMERT's TSV: fields :data:`LXMERT_FIELDS` (note ``img_h`` before ``img_w``), adding ``objects_id``
  (int64), ``objects_conf`` (float32), ``attrs_id`` (int64), ``attrs_conf`` (float32). ``objects_id``
  is the detector's top non-background class, 0-based into the 1600-line Visual Genome
  ``objects_vocab.txt`` (LXMERT's extractor takes ``argmax(cls_prob[:, 1:])``; line i is class i + 1
  of ``cls_prob``, column 0 the background), and ``objects_conf`` its probability.
* ViLBERT / MMF per-image dicts: keys :data:`NPY_KEYS`, saved as a pickled ``.npy`` dict by those
  projects; ssga also accepts the same arrays as a pickle-free ``.npz``. MMF's split form keeps the
  features in ``<id>.npy`` (a plain array) and the rest in a pickled ``<id>_info.npy``.
"""
from __future__ import annotations

import base64
import binascii
import csv
import os
import sys

import numpy as np

from ssga_io import fs

BUTD_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
LXMERT_FIELDS = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)
# Keys of a ViLBERT/MMF region dict (also the array names inside an ssga ``.npz``).
NPY_KEYS = ("image_id", "bbox", "num_boxes", "objects", "image_width", "image_height", "cls_prob", "features")
MMF_INFO_SUFFIX = "_info"
# Visual Genome's 1600 object classes + background: the class space of BUTD's Caffe model and LXMERT.
LXMERT_NUM_CLASSES = 1601



def count_classes(objects_vocab: str | os.PathLike) -> int:
    """Width of a class distribution over ``objects_vocab.txt``: one class per line + the background."""
    lines = fs.read_text(objects_vocab).splitlines()  # a local path or a Beam filesystem URL
    empty = [i for i, line in enumerate(lines, start=1) if not line.split(",")[0].strip()]
    if not lines or empty:
        raise ValueError(f"{objects_vocab}: {'empty vocabulary' if not lines else f'line {empty[0]} holds no class name'}")
    return 1 + len(lines)


def raise_csv_field_limit() -> None:
    """BUTD rows hold megabytes of base64 (36 x 2048 float32 ≈ 400 kB per field); lift csv's 128 kB cap."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32 bit on some platforms
            limit //= 10


def b64_array(array: np.ndarray, dtype: type) -> str:
    """Array → base64 text of its raw little-endian bytes (what ``generate_tsv.py`` writes)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode("ascii")


def array_b64(text: str, dtype: type, field: str) -> np.ndarray:
    """Base64 text → flat array; raises ``ValueError`` naming the field when it is not valid base64
    or its byte count is not a whole number of ``dtype`` items (a truncated field)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"field {field!r} is not valid base64 ({e})") from e
    item = np.dtype(dtype).itemsize
    if len(raw) % item:
        raise ValueError(f"field {field!r} holds {len(raw)} bytes, not a whole number of {np.dtype(dtype).name} values")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
