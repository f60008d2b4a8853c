"""Join images named by file (VCR ``img_fn``, NLVR2 ``<stem>-img0``, SNLI-VE ``Flickr30K_ID``) to
region samples, whose ``image_id`` is whatever the region source wrote.

The key (flag ``--image-id``, :mod:`schemas.image_ids`): ``stem`` (the file stem equals the region
image id), ``int`` (the integers at the end of both agree: ``3416050480.jpg`` ↔ ``"3416050480"``),
``map`` (an id map file: stem → region image id), ``auto`` (whichever of ``stem`` and ``int`` joins
more names; ties go to ``stem``). Shared by the VCR, NLVR2 and SNLI-VE readers.
"""
from __future__ import annotations

from collections.abc import Iterable

from schemas.image_ids import JoinError, best_join, file_stem, image_key

JOIN_KEYS = ("auto", "stem", "int", "map")


def join_image_names(
    names: Iterable[str], region_ids: Iterable[str], key: str = "auto", id_map: dict[str, str] | None = None,
    what: str = "image", regions: str = "the region shards",
) -> tuple[dict[str, str], str]:
    """``({image file stem: region image_id}, key used)`` for the names that join (any name or path
    is reduced to its file stem first). No name joining at all is a :class:`JoinError`."""
    if key not in JOIN_KEYS:
        raise JoinError(f"join key must be one of {JOIN_KEYS}, got {key!r}")
    if key == "map" and id_map is None:
        raise JoinError("join key 'map' needs an id map (--id-map FILE)")
    stems = sorted({file_stem(n) for n in names})
    modes = ["map"] if id_map is not None else (["stem", "int"] if key == "auto" else [key])
    keys = {m: {s: image_key(s, "stem", id_map) if m == "map" else image_key(s, m) for s in stems} for m in modes}
    return best_join(keys, sorted(set(region_ids)), what, regions)


def join_region_dir(names: Iterable[str], regions_dir: str, key: str = "auto", id_map_file: str = "", what: str = "image") -> tuple[dict[str, str], str]:
    """:func:`join_image_names` against the region samples of ``regions_dir``, the id map read from
    ``id_map_file`` (``--id-map``) when given: what a task's run joins its images with."""
    from pathlib import Path

    from schemas.image_ids import parse_id_map
    from trainer.tasks.regions import region_image_ids

    id_map = parse_id_map(Path(id_map_file).read_text(), id_map_file) if id_map_file else None
    return join_image_names(names, region_image_ids(regions_dir), key, id_map, what, regions_dir)
