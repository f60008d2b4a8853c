"""Join images named by file (VCR ``img_fn``, NLVR2 ``<stem>-img0``, SNLI-VE ``Flickr30K_ID``) to
region samples, whose ``image_id`` is whatever the region source wrote.

The key (flag ``--image-id``, :mod:`schemas.image_ids`): ``stem`` (the file stem equals the region
image id), ``int`` (the integers at the end of both agree: ``3416050480.jpg`` ↔ ``"3416050480"``),
``map`` (an id map file: stem → region image id), ``auto`` (whichever of ``stem`` and ``int`` joins
more names; ties go to ``stem``). Shared by the VCR, NLVR2 and SNLI-VE readers.
"""
from __future__ import annotations

from collections.abc import Iterable

from schemas.image_ids import file_stem, image_key, int_key, no_join_message

JOIN_KEYS = ("auto", "stem", "int", "map")


class JoinError(ValueError):
    """No image joins, or the key is ambiguous or unknown."""


def _region_index(region_ids: Iterable[str], mode: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for rid in region_ids:
        k = int_key(rid) if mode == "int" else rid
        if k is None:
            continue
        if k in out and out[k] != rid:
            raise JoinError(f"region image ids {out[k]!r} and {rid!r} both mean image {k} under the {mode} key; use --image-id stem or --id-map")
        out[k] = rid
    return out


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
    rids = sorted(set(region_ids))
    modes = ["map"] if id_map is not None else (["stem", "int"] if key == "auto" else [key])
    joined: dict[str, dict[str, str]] = {}
    tried: dict[str, list[str]] = {}
    for m in modes:
        try:
            index = {r: r for r in rids} if m == "map" else _region_index(rids, m)
        except JoinError:
            if len(modes) == 1:
                raise
            continue  # auto: a key under which region ids collide cannot be the right one
        keys = {s: image_key(s, "stem" if m == "map" else m, id_map if m == "map" else None) for s in stems}
        joined[m] = {s: index[k] for s, k in keys.items() if k is not None and k in index}
        tried[m] = sorted(k for k in keys.values() if k is not None)[:3]
    best = max(joined, key=lambda m: len(joined[m]), default="")
    if not best or not joined[best]:
        raise JoinError(no_join_message(what, tried, rids, regions))
    return joined[best], best
