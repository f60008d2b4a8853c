"""Readers of detector-region files, converting to :class:`schemas.records.RegionRecord` at the edge.

Every reader returns, per input record, either a valid ``RegionRecord`` (boxes ``xyxy`` with an
exclusive end, validated with :func:`schemas.records.region_problem`) or a :class:`Rejected` naming
the record, where it came from and why. Readers never raise on a bad record; they raise only on a
bad *request* (reading a pickled ``.npy`` without ``allow_pickle=True``).

    for item in read_butd_tsv("regions.tsv"):            # bottom-up-attention TSV (lxmert=True: LXMERT's)
        ...
    item = read_region_file("regions_npz/000017.npz")     # safe: no pickle
    item = read_region_file("regions_npy/000017.npy", allow_pickle=True)   # only for trusted files

Box convention: BUTD / py-faster-rcnn / maskrcnn-benchmark write *inclusive* pixel boxes, and the
ViLBERT / MMF ``.npy`` files come from those extractors, so ``inclusive=True`` is the default
everywhere; pass ``inclusive=False`` for files already in the exclusive (torchvision) convention.
LXMERT's ``objects_id``/``objects_conf`` (the detector's top class, 0-based into ``objects_vocab.txt``)
become the record's ``objects``/``objects_conf`` and a class distribution built from them
(:func:`schemas.records.objects_to_cls`, ``num_classes`` = 1 + vocabulary, VG's 1601 by default), so
the tag-similarity teacher and masked region classification work on LXMERT features;
``attrs_id``/``attrs_conf`` are validated but not kept.
"""
from __future__ import annotations

import csv
import io
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from schemas.boxes import inclusive_to_exclusive
from schemas.records import RegionRecord, objects_to_cls, region_problem
from pipelines.formats.region_formats import (
    BUTD_FIELDS,
    LXMERT_FIELDS,
    MMF_INFO_SUFFIX,
    LXMERT_NUM_CLASSES,
    array_b64,
    raise_csv_field_limit,
)
from ssga_io import fs
from ssga_io.security import PICKLE_RISK

raise_csv_field_limit()


@dataclass(frozen=True)
class Rejected:
    """A record that could not be read: its id (or a placeholder), its source location, the reason."""

    record_id: str
    source: str
    reason: str


class PickleNotAllowed(PermissionError):
    """Raised when a pickled ``.npy`` is to be read without the explicit opt-in."""


def _integral(value: Any, name: str) -> int:
    """An integer from text or a numpy scalar; ``ValueError`` naming the field otherwise."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not np.isfinite(f) or f != int(f):
        raise ValueError(f"{name} {value!r} is not an integer")
    return int(f)


def _finish(rec: RegionRecord, source: str, inclusive: bool) -> RegionRecord | Rejected:
    """Convert the box convention and validate; the one exit of every reader."""
    if rec.boxes.ndim == 2 and rec.boxes.shape[1] == 4 and inclusive:
        rec.boxes = inclusive_to_exclusive(rec.boxes)
    reason = region_problem(rec)
    return Rejected(rec.image_id or f"<{source}>", source, reason) if reason else rec


# ---------------------------------------------------------------------------------------------
# Bottom-up-attention TSV (and LXMERT's variant)


def parse_butd_line(
    line: str, source: str, lxmert: bool = False, inclusive: bool = True, num_classes: int = LXMERT_NUM_CLASSES
) -> RegionRecord | Rejected:
    """One TSV line → record or rejection. ``source`` (e.g. ``"regions.tsv:17"``) goes into rejections.
    ``num_classes``: LXMERT only, 1 + the vocabulary ``objects_id`` indexes."""
    names = LXMERT_FIELDS if lxmert else BUTD_FIELDS
    try:
        fields = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"))
    except csv.Error as e:
        return Rejected(f"<{source}>", source, f"unparseable TSV line: {e}")
    record_id = fields[0] if fields and fields[0] else f"<{source}>"
    if len(fields) != len(names):
        return Rejected(record_id, source, f"expected {len(names)} tab-separated fields {list(names)}, got {len(fields)}")
    row = dict(zip(names, fields))
    try:
        if lxmert:
            image_id, w, h = row["img_id"], _integral(row["img_w"], "img_w"), _integral(row["img_h"], "img_h")
        else:
            image_id, w, h = row["image_id"], _integral(row["image_w"], "image_w"), _integral(row["image_h"], "image_h")
        n = _integral(row["num_boxes"], "num_boxes")
        boxes = array_b64(row["boxes"], np.float32, "boxes")
        if boxes.size != 4 * n:
            return Rejected(record_id, source, f"num_boxes is {n} but the boxes field holds {boxes.size} values ({boxes.size / 4:g} boxes)")
        feats = array_b64(row["features"], np.float32, "features")
        if n == 0 or feats.size % n:
            return Rejected(record_id, source, f"num_boxes is {n} but the features field holds {feats.size} values, not a multiple of it")
        extra = {}
        if lxmert:
            for name, dtype in (("objects_id", np.int64), ("objects_conf", np.float32), ("attrs_id", np.int64), ("attrs_conf", np.float32)):
                extra[name] = a = array_b64(row[name], dtype, name)
                if a.size != n:
                    return Rejected(record_id, source, f"num_boxes is {n} but {name} holds {a.size} values")
    except ValueError as e:
        return Rejected(record_id, source, str(e))
    rec = RegionRecord(image_id, w, h, boxes.reshape(n, 4), feats.reshape(n, -1))
    if lxmert:
        ids, conf = extra["objects_id"], extra["objects_conf"]
        bad = ids[(ids < 0) | (ids >= num_classes - 1)]
        if bad.size:
            return Rejected(record_id, source, f"objects_id {int(bad[0])} lies outside the {num_classes - 1}-class vocabulary "
                            "(0-based; pass the objects_vocab.txt the extractor used)")
        rec.objects, rec.objects_conf = ids, conf
        rec.cls_prob = objects_to_cls(ids, conf, num_classes)
    return _finish(rec, source, inclusive)


def is_blank(raw: bytes) -> bool:
    """A line holding only ASCII whitespace is no record: readers skip it, and stages do not count it."""
    return not raw.strip()


def parse_butd_bytes(
    raw: bytes, source: str, lxmert: bool = False, inclusive: bool = True, num_classes: int = LXMERT_NUM_CLASSES
) -> RegionRecord | Rejected:
    """Like :func:`parse_butd_line` for an undecoded line; a line that is not UTF-8 is rejected."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(f"<{source}>", source, f"line is not valid UTF-8 ({e.reason} at byte {e.start})")
    return parse_butd_line(text, source, lxmert, inclusive, num_classes)


def iter_lines(path: str | os.PathLike, start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` of the lines that *start* in byte range ``[start, end)``.
    ``start`` must be 0 or just after a newline; ``first_line`` is the number of the line there.
    ``path`` may be a Beam filesystem URL (``gs://``…): its reader seeks like a local file."""
    with fs.open_read(path) as f:
        f.seek(start)
        pos, line_no = start, first_line
        while end is None or pos < end:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            yield line_no, raw
            line_no += 1


def read_butd_tsv(
    path: str | os.PathLike, lxmert: bool = False, inclusive: bool = True, num_classes: int = LXMERT_NUM_CLASSES
) -> Iterator[RegionRecord | Rejected]:
    """Stream a whole TSV file, one record or rejection per non-blank line (blank lines are skipped)."""
    for line_no, raw in iter_lines(path):
        if not is_blank(raw):
            yield parse_butd_bytes(raw, f"{path}:{line_no}", lxmert, inclusive, num_classes)


# ---------------------------------------------------------------------------------------------
# ViLBERT / MMF per-image dicts: pickled .npy, safe .npz, MMF split <id>.npy + <id>_info.npy


def _record_from_dict(d: dict[str, Any], image_id: str, source: str, inclusive: bool) -> RegionRecord | Rejected:
    missing = [k for k in ("bbox", "features", "image_width", "image_height") if k not in d]
    if missing:
        return Rejected(image_id, source, f"region dict lacks key(s) {missing}")
    try:
        w = _integral(np.asarray(d["image_width"]).item(), "image_width")
        h = _integral(np.asarray(d["image_height"]).item(), "image_height")
        boxes = np.asarray(d["bbox"], dtype=np.float32)
        feats = np.asarray(d["features"], dtype=np.float32)
        cls = np.asarray(d["cls_prob"], dtype=np.float32) if d.get("cls_prob") is not None else None
        if "num_boxes" in d:
            n = _integral(np.asarray(d["num_boxes"]).item(), "num_boxes")
            if boxes.ndim != 2 or boxes.shape[0] != n:
                return Rejected(image_id, source, f"num_boxes is {n} but bbox has shape {tuple(boxes.shape)}")
    except (ValueError, TypeError) as e:
        return Rejected(image_id, source, str(e))
    return _finish(RegionRecord(image_id, w, h, boxes, feats, cls), source, inclusive)


def _loadable(path: str) -> Any:
    """What ``np.load`` reads: a local path as is, a remote file's bytes (a per-image file is small)."""
    return io.BytesIO(fs.read_bytes(path)) if fs.is_remote(path) else path


def _split_name(path: str) -> tuple[str, str, str]:
    """``(directory, stem, suffix)`` of a local path or a URL."""
    directory, name = (posixpath.split(path) if fs.is_remote(path) else os.path.split(path))
    stem, suffix = os.path.splitext(name)
    return directory, stem, suffix


def _load_pickled_dict(path: str, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise PickleNotAllowed(f"{path}: refusing to unpickle: {PICKLE_RISK}")
    obj = np.load(_loadable(path), allow_pickle=True, encoding="latin1")  # latin1: py2-era ViLBERT files
    return obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else obj


def read_region_file(path: str | os.PathLike, allow_pickle: bool = False, inclusive: bool = True) -> RegionRecord | Rejected:
    """One per-image region file → record or rejection. The image id is the file stem.

    ``.npz``: arrays named like the ViLBERT dict keys, loaded without pickle. ``.npy``: a pickled
    dict (ViLBERT/MMF) or MMF's split form (plain features array + pickled ``<id>_info.npy``); both
    need ``allow_pickle=True`` and raise :class:`PickleNotAllowed` otherwise, before any byte is read.
    ``path`` may be a Beam filesystem URL.
    """
    path = str(path)
    directory, image_id, suffix = _split_name(path)
    source = path
    if suffix == ".npy" and not allow_pickle:
        raise PickleNotAllowed(f"{path}: refusing to unpickle: {PICKLE_RISK}")
    try:
        if suffix == ".npz":
            with np.load(_loadable(path), allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        elif suffix == ".npy":
            obj = _load_pickled_dict(path, allow_pickle)
            if isinstance(obj, dict):
                d = obj
            else:  # MMF split form: this file is the features array
                info_name = f"{image_id}{MMF_INFO_SUFFIX}.npy"
                info = fs.join(directory, info_name)
                if not fs.exists(info):
                    return Rejected(image_id, source, f"not a region dict and no MMF info file {info_name} beside it")
                d = dict(_load_pickled_dict(info, allow_pickle))
                d["features"] = obj
        else:
            return Rejected(image_id, source, f"unknown region file type {suffix!r} (expected .npz or .npy)")
    except PickleNotAllowed:
        raise
    except Exception as e:  # truncated zip/npy, and an unpickler can raise anything: reject, don't crash
        return Rejected(image_id, source, f"unreadable region file: {type(e).__name__}: {e}")
    if not isinstance(d, dict):
        return Rejected(image_id, source, f"file holds a {type(d).__name__}, not a region dict")
    return _record_from_dict(d, image_id, source, inclusive)


def list_region_files(directory: str | os.PathLike, kind: str) -> list[str]:
    """Per-image files of a directory (or a URL prefix) in sorted order: ``kind`` is ``"npz"`` or ``"npy"``
    (MMF ``*_info.npy`` companions are not images of their own). One listing, no per-file stat."""
    if kind not in ("npz", "npy"):
        raise ValueError(f"kind must be 'npz' or 'npy', got {kind!r}")
    files = fs.glob(fs.join(str(directory), f"*.{kind}"))
    if kind == "npy":
        names = {fs.basename(p) for p in files}
        files = [p for p in files
                 if not ((stem := _split_name(p)[1]).endswith(MMF_INFO_SUFFIX) and stem[: -len(MMF_INFO_SUFFIX)] + ".npy" in names)]
    return files
