"""Read REFER-format referring expressions (RefCOCO / RefCOCO+ / RefCOCOg) and join them with proposals.

Inputs, as the REFER toolkit lays them out in one directory:

- ``refs.json`` (the safe form) or ``refs(unc).p`` (a pickled list, read only with
  ``allow_pickle=True``: unpickling runs arbitrary code from the file);
- ``instances.json``: COCO-style annotations, ``bbox`` in ``[x, y, w, h]`` pixels.

Proposals come from region shards (``schemas.shards``), one sample per image, keyed by whatever the
region source wrote: BUTD's COCO TSV writes COCO's integer ``image_id`` (``581857``), per-image files
are named by file stem. **The join key** (``image_id``, flag ``--image-id``; see :mod:`schemas.image_ids`):

* ``stem``: the stem of the image's ``file_name`` in ``instances.json`` (``COCO_train2014_000000581857``).
  A ref's own ``file_name`` is *not* the image's: REFER appends the annotation id
  (``COCO_train2014_000000581857_16.jpg``); it is used, minus that suffix, only for an image missing
  from ``instances.json``.
* ``int``: the ref's COCO ``image_id`` (``"581857"``).
* ``map``: ``--id-map FILE`` (COCO instances JSON or TSV ``<file stem><TAB><region image_id>``), by stem.
* ``auto`` (:func:`join_refer`): whichever of ``stem`` and ``int`` joins more expressions.

One :class:`Expression` per sentence; its ground truth is the box of the ref's annotation,
converted to the project's ``xyxy`` with :func:`schemas.boxes.xywh_to_xyxy`.
"""
from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.boxes import box_problem, xywh_to_xyxy
from schemas.image_ids import IMAGE_ID_MODES, file_stem, image_key, no_join_message, parse_id_map
from schemas.records import RegionRecord
from ssga_io.security import PICKLE_RISK
from trainer.tasks.regions import RegionError, read_regions, region_image_ids

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "testA", "testB")


class ReferError(ValueError):
    """REFER input that cannot be used; the message names the file, the record and the reason."""


@dataclass
class Expression:
    """One referring expression (a REFER sentence) with its ground-truth box."""

    sent_id: int
    ref_id: int
    image_id: str  # the join key: the region shard's image_id (file stem, COCO id, or mapped)
    split: str
    text: str
    gt_box: np.ndarray  # float32 [4] xyxy, exclusive end
    needs: list[str] = field(default_factory=list)  # synthetic corpus: colour/size/spatial/shape
    kind: str = ""  # synthetic corpus: "minimal" | "relational"


def _load_refs(refer_dir: Path, allow_pickle: bool) -> tuple[list[dict], Path]:
    js = refer_dir / "refs.json"
    if js.exists():
        try:
            return json.loads(js.read_text()), js
        except json.JSONDecodeError as e:
            raise ReferError(f"{js}: invalid JSON: {e}") from e
    pickles = sorted(refer_dir.glob("refs(*).p"))
    if not pickles:
        raise ReferError(f"{refer_dir}: no refs.json and no refs(<split_by>).p")
    if not allow_pickle:
        raise ReferError(
            f"{pickles[0]}: only the pickled refs are present and allow_pickle is off ({PICKLE_RISK}); "
            "convert it to refs.json once, or pass allow_pickle=True / --allow-pickle"
        )
    log.warning("unpickling %s (%s)", pickles[0], PICKLE_RISK)
    with open(pickles[0], "rb") as f:
        return pickle.load(f), pickles[0]


def _ref_problem(ref: dict) -> str | None:
    for key in ("ref_id", "ann_id", "image_id", "split", "sentences"):
        if key not in ref:
            return f"lacks {key!r}"
    if ref["split"] not in SPLITS:
        return f"split {ref['split']!r} is not one of {SPLITS}"
    return None


def _image_stem(ref: dict, images: dict) -> str | None:
    """Stem of the image's own file name: instances.json's, else the ref's minus REFER's ``_<ann_id>``."""
    img = images.get(ref["image_id"])
    if img is not None and img.get("file_name"):
        return file_stem(img["file_name"])
    if ref.get("file_name"):
        stem = file_stem(ref["file_name"])
        suffix = f"_{ref['ann_id']}"
        return stem[: -len(suffix)] if stem.endswith(suffix) else stem
    return None


def read_refer(refer_dir: str | Path, allow_pickle: bool = False, image_id: str = "stem", id_map: dict[str, str] | None = None) -> list[Expression]:
    """All expressions of a REFER directory, in refs order then sentence order, keyed by ``image_id``
    (``stem`` or ``int``; ``id_map`` overrides it)."""
    if image_id not in IMAGE_ID_MODES[1:] and id_map is None:
        raise ValueError(f"image_id must be one of {IMAGE_ID_MODES[1:]} (auto: use join_refer), got {image_id!r}")
    refer_dir = Path(refer_dir)
    refs, refs_path = _load_refs(refer_dir, allow_pickle)
    inst_path = refer_dir / "instances.json"
    if not inst_path.exists():
        raise ReferError(f"{refer_dir}: instances.json is missing")
    instances = json.loads(inst_path.read_text())
    anns = {a["id"]: a for a in instances.get("annotations", [])}
    images = {im["id"]: im for im in instances.get("images", [])}
    out: list[Expression] = []
    for i, ref in enumerate(refs):
        where = f"{refs_path}: ref #{i} (ref_id {ref.get('ref_id')!r})"
        reason = _ref_problem(ref)
        if reason:
            raise ReferError(f"{where}: {reason}")
        ann = anns.get(ref["ann_id"])
        if ann is None:
            raise ReferError(f"{where}: ann_id {ref['ann_id']} is not in {inst_path}")
        stem = _image_stem(ref, images)
        if image_id == "int" and id_map is None:
            key = str(int(ref["image_id"]))
        elif not stem:
            raise ReferError(f"{where}: no file_name, neither in the ref nor for image {ref['image_id']} in {inst_path}")
        else:
            key = image_key(stem, image_id, id_map)
            if key is None:
                raise ReferError(f"{where}: image {stem!r} " + ("is not in the id map" if id_map is not None else "ends in no integer"))
        box = xywh_to_xyxy(np.asarray([ann["bbox"]], np.float32))
        img = images.get(ref["image_id"])
        if img is not None:
            reason = box_problem(box, img["width"], img["height"])
            if reason:
                raise ReferError(f"{where}: annotation {ann['id']}: {reason}")
        for s in ref["sentences"]:
            text = s.get("sent") or s.get("raw") or " ".join(s.get("tokens", []))
            if not text.strip():
                raise ReferError(f"{where}: sentence {s.get('sent_id')!r} is empty")
            out.append(
                Expression(
                    sent_id=int(s["sent_id"]), ref_id=int(ref["ref_id"]), image_id=key,
                    split=ref["split"], text=text.strip(), gt_box=box[0], needs=list(s.get("needs", [])), kind=s.get("kind", ""),
                )
            )
    return out


def read_proposals(regions_dir: str | Path, max_regions: int = 36, image_ids: set[str] | None = None) -> dict[str, RegionRecord]:
    """Region records by image_id (first ``max_regions`` boxes, as pre-training uses), validated.

    Only images in ``image_ids`` are kept in memory when it is given (:func:`trainer.tasks.regions.read_regions`).
    """
    try:
        return read_regions(regions_dir, max_regions, image_ids)
    except RegionError as e:
        raise ReferError(str(e)) from e


def check_joined(
    expressions: list[Expression], proposals: dict[str, RegionRecord], refer_dir: str | Path, regions_dir: str | Path, key: str = "stem"
) -> None:
    """Every expression's image must have proposals; the error names the key and the first few that do not."""
    missing = sorted({e.image_id for e in expressions if e.image_id not in proposals})
    if missing:
        raise ReferError(
            f"{refer_dir}: {len(missing)} image(s) have no region sample in {regions_dir} "
            f"(matched by {key}), e.g. {missing[:5]}; region image_ids e.g. {sorted(proposals)[:3]}"
        )


def _region_ids(regions_dir: str | Path) -> list[str]:
    try:
        return region_image_ids(regions_dir)
    except RegionError as e:
        raise ReferError(str(e)) from e


def join_refer(
    refer_dir: str | Path, regions_dir: str | Path, image_id: str = "auto", id_map: str | Path = "", allow_pickle: bool = False,
    max_regions: int = 36,
) -> tuple[list[Expression], dict[str, RegionRecord], str]:
    """Expressions and their proposals joined by the key ``image_id`` (``auto``: the one of ``stem`` /
    ``int`` that joins most) or by the ``id_map`` file; returns ``(expressions, proposals, key used)``.
    Raises :class:`ReferError` naming the key(s) tried and ids from both sides when any image is unmatched."""
    mapping = parse_id_map(Path(id_map).read_text(), str(id_map)) if id_map else None
    modes = ["map"] if mapping is not None else (["stem", "int"] if image_id == "auto" else [image_id])
    by_mode = {m: read_refer(refer_dir, allow_pickle, "stem" if m == "map" else m, mapping) for m in modes}
    if len(modes) > 1:
        region_ids = set(_region_ids(regions_dir))
        hits = {m: sum(e.image_id in region_ids for e in by_mode[m]) for m in modes}
        best = max(modes, key=lambda m: hits[m])
        if hits[best] == 0:
            tried = {m: sorted({e.image_id for e in by_mode[m]})[:3] for m in modes}
            raise ReferError(f"{refer_dir}: " + no_join_message("referring expression", tried, sorted(region_ids), str(regions_dir)))
        modes = [best]
    key = modes[0]
    expressions = by_mode[key]
    proposals = read_proposals(regions_dir, max_regions, {e.image_id for e in expressions})
    check_joined(expressions, proposals, refer_dir, regions_dir, key)
    return expressions, proposals, key
