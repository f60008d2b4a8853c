"""How an image is named on each side of a join: the key that captions and referring expressions use
to find an image's region sample (whose ``image_id`` is whatever the region source wrote).

Region sources name images differently: BUTD's ``generate_tsv.py`` for COCO writes COCO's integer
``image_id`` (``581857``), per-image ``.npz``/``.npy`` files are named by file stem, while a caption
names its image by url (``train2014/COCO_train2014_000000581857.jpg``) and REFER by both (COCO id
and ``instances.json`` ``file_name``). The modes (flag ``--image-id``, plus ``--id-map FILE``):

* ``stem``: the file name without directory and extension (``COCO_train2014_000000581857``);
* ``int``:  the integer at the end of that stem, without leading zeros (``581857``): COCO's id;
* ``map``:  looked up by stem in a mapping file (chosen by giving ``--id-map``);
* ``auto``: whichever of ``stem`` and ``int`` joins (decided by the caller against the region ids).

A mapping file is either a COCO-style annotation JSON (``images: [{id, file_name}]``: stem → id) or a
two-column TSV ``<file stem><TAB><region image_id>`` (no header). :func:`best_join` is the one join every
task join module (VQA's, and VCR's that NLVR2 and SNLI-VE share) runs once it has each item's key per mode.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Hashable, Iterable
from typing import TypeVar

IMAGE_ID_MODES = ("auto", "stem", "int")
_TRAILING_INT = re.compile(r"(\d+)$")
K = TypeVar("K", bound=Hashable)


class JoinError(ValueError):
    """No image joins, or the key is ambiguous or unknown."""


def file_stem(name: str) -> str:
    """``images/000017.png`` → ``000017`` (also for ``http://host/a/b.jpg?x=1``)."""
    path = name.split("?", 1)[0].split("#", 1)[0]
    return os.path.splitext(posixpath.basename(path.replace("\\", "/")))[0]


def int_key(stem: str) -> str | None:
    """The integer at the end of a stem as COCO writes ids (``COCO_train2014_000000581857`` → ``581857``)."""
    m = _TRAILING_INT.search(stem)
    return str(int(m.group(1))) if m else None


def image_key(stem: str, mode: str, id_map: dict[str, str] | None = None) -> str | None:
    """The join key of an image known by ``stem`` under ``mode`` (``None``: the mode gives no key)."""
    if id_map is not None:
        return id_map.get(stem)
    if mode == "stem":
        return stem or None
    if mode == "int":
        return int_key(stem)
    raise ValueError(f"image id mode must be one of {IMAGE_ID_MODES[1:]} here (auto is resolved by the caller), got {mode!r}")


def parse_id_map(text: str, source: str) -> dict[str, str]:
    """A mapping file's text → ``{file stem: region image_id}``; ``ValueError`` naming the line otherwise."""
    if text.lstrip().startswith("{"):
        try:
            images = json.loads(text)["images"]
            return {file_stem(im["file_name"]): str(im["id"]) for im in images}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{source}: not a COCO-style annotation file with images[].id and images[].file_name ({e})") from e
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.rstrip("\r").split("\t")
        if len(cols) != 2 or not cols[0] or not cols[1]:
            raise ValueError(f"{source}:{lineno}: expected two tab-separated columns <file stem> <region image_id>, got {line!r}")
        out[file_stem(cols[0])] = cols[1]
    if not out:
        raise ValueError(f"{source}: empty id map")
    return out


def no_join_message(what: str, tried: dict[str, list[str]], region_ids: list[str], regions: str) -> str:
    """One line naming the key(s) tried with a few ids from each side, and the fix."""
    sides = "; ".join(f"by {mode}: e.g. {ids[:3]}" for mode, ids in tried.items())
    return (
        f"no {what} joins a region sample of {regions}: keys tried {sides}; region image_ids e.g. {sorted(region_ids)[:3]}. "
        "Pick the key with --image-id stem|int, or give --id-map FILE (COCO instances JSON, or TSV <file stem><TAB><region image_id>)"
    )


def region_index(region_ids: Iterable[str], mode: str) -> dict[str, str]:
    """Join key → region image_id under ``mode`` (``int``: the trailing integer; any other: the id itself).
    Two region ids with one key is a :class:`JoinError`: the join would have to guess."""
    out: dict[str, str] = {}
    for rid in region_ids:
        k = int_key(rid) if mode == "int" else rid
        if k is None:
            continue
        if k in out and out[k] != rid:
            raise JoinError(f"region image ids {out[k]!r} and {rid!r} both mean image {k} under the {mode} key; use --image-id stem or --id-map")
        out[k] = rid
    return out


def best_join(keys: dict[str, dict[K, str | None]], region_ids: list[str], what: str, regions: str) -> tuple[dict[K, str], str]:
    """``({item: region image_id}, mode)`` for the mode joining the most items, given each item's key under
    each mode to try (``{mode: {item: key or None}}``, in order; ties go to the first). A mode under which
    region ids collide is passed over while another remains; no item joining at all is a :class:`JoinError`
    naming the keys tried and ids from both sides."""
    joined: dict[str, dict[K, str]] = {}
    tried: dict[str, list[str]] = {}
    for mode, item_keys in keys.items():
        try:
            index = region_index(region_ids, mode)
        except JoinError:
            if len(keys) == 1:
                raise
            continue  # auto: a key under which region ids collide cannot be the right one
        joined[mode] = {i: index[k] for i, k in item_keys.items() if k is not None and k in index}
        tried[mode] = sorted(k for k in item_keys.values() if k is not None)[:3]
    best = max(joined, key=lambda m: len(joined[m]), default="")
    if not best or not joined[best]:
        raise JoinError(no_join_message(what, tried, region_ids, regions))
    return joined[best], best
