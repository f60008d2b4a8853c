"""Join VQA's COCO integer ``image_id`` to region samples, whose ``image_id`` is a string.

Region sources name COCO images differently: BUTD's ``generate_tsv.py`` for COCO writes the integer
(``"581857"``), per-image feature files carry the file stem (``"COCO_val2014_000000581857"``), the
synthetic corpus its zero-padded index (``"000017"``, whose COCO id is ``17``). The key (flag
``--image-id``, see :mod:`schemas.image_ids`):

* ``int``:  the integer at the end of the region image id (:func:`schemas.image_ids.int_key`) equals
  the VQA ``image_id`` (``COCO_val2014_000000581857``, ``581857`` and ``000581857`` all give 581857);
* ``stem``: the region image id is the COCO file stem ``COCO_<data_subtype>_<image_id:012d>``;
* ``map``:  an id map (``--id-map``, :func:`schemas.image_ids.parse_id_map`: file stem → region
  image_id) applied to that COCO file stem;
* ``auto``: whichever of ``int`` and ``stem`` joins more images.

No image joining at all is an error naming the key(s) tried and ids from both sides; images that do
not join while others do are reported per question by the reader (``known_images``).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from schemas.image_ids import JoinError, best_join
from trainer.tasks.regions import RegionError
from trainer.tasks.regions import region_image_ids as shared_region_image_ids
from trainer.tasks.vqa.reader import VQAError

JOIN_KEYS = ("auto", "int", "stem", "map")


def coco_file_stem(image_id: int, data_subtype: str) -> str:
    """COCO's file stem of an image: ``COCO_val2014_000000581857``."""
    return f"COCO_{data_subtype}_{image_id:012d}"


def region_image_ids(regions_dir: str | Path) -> list[str]:
    """The ``image_id`` of every region sample under ``regions_dir`` (its json members only)."""
    try:
        return shared_region_image_ids(regions_dir)
    except RegionError as e:
        raise VQAError(str(e)) from e


def _vqa_key(image_id: int, key: str, data_subtype: str, id_map: dict[str, str] | None) -> str | None:
    if key == "int":
        return str(image_id)
    stem = coco_file_stem(image_id, data_subtype)
    return id_map.get(stem) if key == "map" and id_map is not None else stem


def join_regions(
    image_ids: Iterable[int], region_ids: Iterable[str], key: str = "auto", data_subtype: str = "",
    id_map: dict[str, str] | None = None, what: str = "VQA image", regions: str = "the region shards",
) -> tuple[dict[int, str], str]:
    """``({COCO image_id: region image_id}, key used)`` for the images that join. ``id_map`` forces
    ``map``; ``stem``/``map`` need the questions file's ``data_subtype`` (``val2014``)."""
    if key not in JOIN_KEYS:
        raise VQAError(f"join key must be one of {JOIN_KEYS}, got {key!r}")
    images, rids = sorted(set(image_ids)), sorted(set(region_ids))
    modes = ["map"] if id_map is not None else (["int", "stem"] if key == "auto" else [key])
    if key == "map" and id_map is None:
        raise VQAError("join key 'map' needs an id map (--id-map FILE)")
    if any(m in ("stem", "map") for m in modes) and not data_subtype and len(modes) == 1:
        raise VQAError(f"the {modes[0]} key needs the split's data_subtype (e.g. val2014) to build COCO file names")
    keys = {m: {i: _vqa_key(i, m, data_subtype, id_map) for i in images} for m in modes if m == "int" or data_subtype}
    try:  # auto without a data_subtype: only int can be tried
        return best_join(keys, rids, what, regions)  # ties: the first listed (int before stem)
    except JoinError as e:
        raise VQAError(str(e)) from e
