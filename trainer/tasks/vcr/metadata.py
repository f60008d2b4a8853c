"""VCR's per-image metadata (``metadata_fn``): the detected objects' boxes, converted at the edge.

The published JSON is ``{"boxes": [[x1, y1, x2, y2, score], ...], "segms": [[polygon, ...], ...],
"names": [...], "width": W, "height": H}``, one box and one list of polygons (each ``[[x, y], ...]``)
per entry of the record's ``objects``. rowanz/r2c ``dataloaders/vcr.py`` drops the last column
("that's the confidence") and uses the rest as continuous pixel coordinates, asserting
``x1 < x2 <= W`` and ``y1 < y2 <= H``: the end is exclusive already, so the conversion to the
project's convention (float32 ``xyxy``, exclusive end, :mod:`schemas.boxes`) is only the dtype and
the dropped score, which is kept apart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.boxes import box_problem
from trainer.tasks.vcr.reader import VCRError


@dataclass(frozen=True)
class VCRMetadata:
    boxes: np.ndarray  # float32 [N, 4] xyxy, exclusive end (project convention)
    scores: np.ndarray  # float32 [N] detector confidence (the 5th column)
    segms: tuple  # per object: list of polygons [[x, y], ...]
    width: int
    height: int
    names: tuple[str, ...] = ()


def parse_metadata(doc: object, where: str, num_objects: int | None = None) -> VCRMetadata:
    """A metadata document → :class:`VCRMetadata`; ``num_objects`` (the record's ``len(objects)``) must match."""
    if not isinstance(doc, dict):
        raise VCRError(f"{where}: metadata is not a JSON object")
    for name in ("width", "height"):
        if not isinstance(doc.get(name), (int, float)) or doc[name] <= 0:
            raise VCRError(f"{where}: field {name!r} is missing or not a positive number")
    raw = doc.get("boxes")
    try:
        arr = np.asarray(raw, dtype=np.float64).reshape(-1, 5) if raw else np.zeros((0, 5))
    except (TypeError, ValueError):
        raise VCRError(f"{where}: field 'boxes' is not a list of [x1, y1, x2, y2, score]") from None
    if raw and arr.shape[0] != len(raw):
        raise VCRError(f"{where}: field 'boxes' is not a list of [x1, y1, x2, y2, score]")
    segms = doc.get("segms", [])
    if not isinstance(segms, list) or len(segms) != arr.shape[0]:
        raise VCRError(f"{where}: field 'segms' has {len(segms) if isinstance(segms, list) else '?'} entries for {arr.shape[0]} boxes")
    if num_objects is not None and arr.shape[0] != num_objects:
        raise VCRError(f"{where}: field 'boxes' has {arr.shape[0]} boxes but the record lists {num_objects} objects")
    boxes = arr[:, :4].astype(np.float32)
    if boxes.shape[0]:
        why = box_problem(boxes, float(doc["width"]), float(doc["height"]))
        if why:
            raise VCRError(f"{where}: field 'boxes': {why}")
    names = doc.get("names", [])
    return VCRMetadata(boxes, arr[:, 4].astype(np.float32), tuple(segms), int(doc["width"]), int(doc["height"]), tuple(names) if isinstance(names, list) else ())


def read_metadata(path: str | Path, num_objects: int | None = None) -> VCRMetadata:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VCRError(f"{path}: no such metadata file") from None
    except json.JSONDecodeError as e:
        raise VCRError(f"{path}: not valid JSON ({e})") from None
    return parse_metadata(doc, str(path), num_objects)
