"""Writers for the formats ssga reads: the mirror of :mod:`pipelines.formats.readers`.

They exist so that the synthetic corpus (:mod:`pipelines.synthetic`) is written in exactly the
formats real corpora come in, and goes through the real readers. Every writer takes records in the
project's convention (:class:`schemas.records.RegionRecord`, boxes ``xyxy`` with an exclusive end)
and converts at the edge, as the readers do in reverse: BUTD / LXMERT / ViLBERT files hold
*inclusive* boxes. Output bytes depend only on the inputs (no timestamps), so corpora are
reproducible.

    with open("regions.tsv", "w", newline="") as f:
        for rec in records:
            f.write(butd_line(rec))
"""
from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence
from xml.sax.saxutils import escape

import numpy as np

from schemas.boxes import exclusive_to_inclusive
from schemas.records import RegionRecord
from pipelines.formats.region_formats import BUTD_FIELDS, LXMERT_FIELDS, b64_array

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member time: npz bytes must not depend on the clock


def _check_tsv_text(value: str, what: str) -> str:
    if any(c in value for c in "\t\r\n"):
        raise ValueError(f"{what} {value!r} contains a tab or newline and cannot be written to a TSV")
    return value


def butd_line(rec: RegionRecord) -> str:
    """One bottom-up-attention TSV line (``generate_tsv.py`` layout), boxes written inclusive."""
    incl = exclusive_to_inclusive(rec.boxes)
    fields = [
        _check_tsv_text(rec.image_id, "image_id"),
        str(int(rec.image_w)),
        str(int(rec.image_h)),
        str(rec.num_boxes),
        b64_array(incl, np.float32),
        b64_array(rec.features, np.float32),
    ]
    assert len(fields) == len(BUTD_FIELDS)
    return "\t".join(fields) + "\n"


def lxmert_line(
    rec: RegionRecord,
    objects_id: np.ndarray,
    objects_conf: np.ndarray,
    attrs_id: np.ndarray,
    attrs_conf: np.ndarray,
) -> str:
    """One LXMERT TSV line (``img_h`` before ``img_w``, as LXMERT's loader expects)."""
    n = rec.num_boxes
    for name, a in (("objects_id", objects_id), ("objects_conf", objects_conf), ("attrs_id", attrs_id), ("attrs_conf", attrs_conf)):
        if np.shape(a) != (n,):
            raise ValueError(f"{rec.image_id}: {name} has shape {np.shape(a)}, expected ({n},)")
    fields = [
        _check_tsv_text(rec.image_id, "image_id"),
        str(int(rec.image_h)),
        str(int(rec.image_w)),
        b64_array(objects_id, np.int64),
        b64_array(objects_conf, np.float32),
        b64_array(attrs_id, np.int64),
        b64_array(attrs_conf, np.float32),
        str(n),
        b64_array(exclusive_to_inclusive(rec.boxes), np.float32),
        b64_array(rec.features, np.float32),
    ]
    assert len(fields) == len(LXMERT_FIELDS)
    return "\t".join(fields) + "\n"


def region_dict(rec: RegionRecord) -> dict[str, Any]:
    """The ViLBERT/MMF per-image dict (boxes inclusive, ``objects`` = argmax over non-background classes)."""
    d: dict[str, Any] = {
        "image_id": rec.image_id,
        "bbox": exclusive_to_inclusive(rec.boxes).astype(np.float32),
        "num_boxes": np.int64(rec.num_boxes),
        "image_width": np.int64(rec.image_w),
        "image_height": np.int64(rec.image_h),
        "features": np.asarray(rec.features, dtype=np.float32),
    }
    if rec.cls_prob is not None:
        d["cls_prob"] = np.asarray(rec.cls_prob, dtype=np.float32)
        d["objects"] = np.argmax(d["cls_prob"][:, 1:], axis=1).astype(np.int64)
    return d


def write_region_npz(path: str | os.PathLike, rec: RegionRecord) -> None:
    """The pickle-free form: an ``.npz`` (a zip of plain ``.npy`` arrays) with the dict's keys.

    Written member by member with a fixed timestamp, since ``np.savez`` stamps the current time.
    """
    d = region_dict(rec)
    d["image_id"] = np.array(rec.image_id)  # a unicode scalar array: no pickle needed to read it
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(d):
            buf = io.BytesIO()
            np.save(buf, np.asarray(d[key]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH), buf.getvalue())


def write_region_npy(path: str | os.PathLike, rec: RegionRecord) -> None:
    """The ViLBERT/MMF form: ``np.save`` of the dict, which pickles it (readers need an opt-in)."""
    np.save(path, region_dict(rec), allow_pickle=True)


def write_mmf_split(directory: str | os.PathLike, rec: RegionRecord) -> None:
    """MMF's split form: ``<id>.npy`` plain features array + pickled ``<id>_info.npy`` with the rest."""
    d = region_dict(rec)
    feats = d.pop("features")
    np.save(Path(directory) / f"{rec.image_id}.npy", feats, allow_pickle=False)
    np.save(Path(directory) / f"{rec.image_id}_info.npy", d, allow_pickle=True)


# ---------------------------------------------------------------------------------------------
# Language-side formats


def caption_line(caption: str, url: str) -> str:
    """Conceptual Captions TSV line: ``caption<TAB>url``, no header."""
    return f"{_check_tsv_text(caption, 'caption')}\t{_check_tsv_text(url, 'url')}\n"


def flickr30k_sentence(text: str, phrases: Sequence[tuple[int, int, int, str]]) -> str:
    """Flickr30k Entities markup of a sentence.

    ``phrases`` are ``(start, end, entity_id, entity_type)`` character spans of ``text``, non-
    overlapping; each becomes ``[/EN#<id>/<type> <phrase text>]``. As in the real files, ``text``
    is tokenised (punctuation separated by spaces) and every phrase starts and ends at a token
    boundary: the official parser splits on whitespace and ends a phrase at a token ending in ``]``,
    so ``[/EN#2/other a red square],`` would be misread.
    """
    out, pos = [], 0
    for start, end, ent, etype in sorted(phrases):
        if start < pos or not (0 <= start < end <= len(text)):
            raise ValueError(f"phrase span [{start}, {end}) overlaps another or lies outside {text!r}")
        if (start > 0 and not text[start - 1].isspace()) or (end < len(text) and not text[end].isspace()):
            raise ValueError(f"phrase {text[start:end]!r} of {text!r} does not start and end at a whitespace token boundary")
        if text[start:end] != " ".join(text[start:end].split()):
            raise ValueError(f"phrase {text[start:end]!r} has leading, trailing or repeated whitespace")
        out.append(text[pos:start])
        out.append(f"[/EN#{ent}/{etype} {text[start:end]}]")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def flickr30k_xml(filename: str, width: int, height: int, boxes: Iterable[tuple[int, np.ndarray]]) -> str:
    """Flickr30k Entities annotation XML. ``boxes`` are ``(entity_id, xyxy exclusive)``; written
    as the 1-based inclusive integer pixel coordinates Flickr30k uses (Pascal VOC style: the
    official parser subtracts 1), i.e. ``[x1 + 1, y1 + 1, x2, y2]``."""
    lines = [
        "<annotation>",
        f"<filename>{escape(filename)}</filename>",
        f"<size><width>{int(width)}</width><height>{int(height)}</height><depth>3</depth></size>",
    ]
    for ent, box in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in np.asarray(box, np.float32))
        lines.append(
            f"<object><name>{int(ent)}</name><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_refer(directory: str | os.PathLike, refs: list[dict[str, Any]], instances: dict[str, Any], split_by: str = "unc") -> None:
    """REFER layout: ``refs.json`` (the safe form), ``refs(<split_by>).p`` (the pickled list the REFER
    toolkit loads; kept for compatibility) and a COCO-style ``instances.json`` (bbox xywh)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    text = json.dumps(refs, sort_keys=True)
    (d / "refs.json").write_text(text + "\n")
    # Pickle exactly what the JSON holds (plain lists/dicts/str/int), so the two forms cannot drift
    # and a reader can check the pickle against the JSON without unpickling it.
    with open(d / f"refs({split_by}).p", "wb") as f:
        pickle.dump(json.loads(text), f, protocol=4)
    (d / "instances.json").write_text(json.dumps(instances, sort_keys=True) + "\n")
