"""Conceptual-Captions style TSV (``caption<TAB>url``, no header) → :class:`schemas.records.Caption`.

The image of a caption is named by its url: by default the basename without extension (``stem``),
or the integer at its end (``int``: COCO ids, as BUTD's COCO features are keyed), or a mapping file
(see :mod:`schemas.image_ids`); :func:`resolve_image_id` picks the key that joins the region shards
(``auto``) or fails naming the keys tried and ids from both sides. ``caption_id`` is
``"<image_id>#<k>"`` with ``k`` the k-th row of that image in file order. ``k`` advances for every
row whose image is known, even when the caption itself is rejected, so ids stay aligned with
files that follow the same order (Flickr30k Entities ``Sentences/<image_id>.txt``).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from ssga_io import fs
from ssga_io.fs import open_text
from schemas.image_ids import file_stem, image_key, no_join_message, parse_id_map
from schemas.manifest import dead_letter
from schemas.records import Caption, caption_problem
from schemas.shards import load_json, shard_index

STAGE = "phrases"


def image_id_from_url(url: str) -> str:
    """``images/000017.png`` → ``000017`` (also for ``http://host/a/b.jpg?x=1``)."""
    return file_stem(url)


def caption_sort_key(caption_id: str) -> tuple[str, int, str]:
    """Order captions of an image by their numeric index (``#10`` after ``#9``)."""
    image, _, k = caption_id.rpartition("#")
    return (image, int(k), "") if k.isdigit() else (caption_id, -1, caption_id)


def read_captions(path: str, image_id: str = "stem", id_map: dict[str, str] | None = None) -> Iterator[tuple[str, object]]:
    """Yield ``("caption", Caption)`` or ``("dead", dead_letter)`` for every non-blank row, in order.
    ``image_id``: ``stem`` or ``int`` (see :mod:`schemas.image_ids`); ``id_map`` overrides it."""
    seen: dict[str, int] = defaultdict(int)
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # blank lines are layout, not records
            where = f"{path}:{lineno}"
            cols = line.split("\t")
            if len(cols) != 2:
                yield "dead", dead_letter(STAGE, where, path, f"expected 2 tab-separated columns (caption, url), got {len(cols)}")
                continue
            text, url = cols[0].strip(), cols[1].strip()
            stem = image_id_from_url(url)
            if not stem:
                yield "dead", dead_letter(STAGE, where, path, f"url {url!r} has no file name to take the image id from")
                continue
            key = image_key(stem, image_id, id_map)
            if key is None:
                why = "is not in the --id-map file" if id_map is not None else "ends in no integer (--image-id int)"
                yield "dead", dead_letter(STAGE, where, path, f"url {url!r}: file name {stem!r} {why}")
                continue
            k = seen[key]
            seen[key] += 1
            cap = Caption(caption_id=f"{key}#{k}", image_id=key, text=text, url=url)
            reason = caption_problem(cap)
            if reason:
                yield "dead", dead_letter(STAGE, cap.caption_id, where, reason)
            else:
                yield "caption", cap


def load_id_map(path: str) -> dict[str, str] | None:
    """The ``--id-map`` file (local or remote), or ``None`` when no path is given."""
    return parse_id_map(fs.read_text(path), path) if path else None


def _region_ids(path: str) -> list[str]:
    """The image ids of one region shard (json members only)."""
    from schemas.shards import iter_shard

    return [load_json(m["json"], f"{path}:{k}")["image_id"] for k, m in iter_shard(path) if "json" in m]  # streamed, local or URL


def resolve_image_id(captions: str, shards: list[tuple[int, str]], mode: str, id_map: dict[str, str] | None, enough: int = 200) -> str:
    """The caption → region key (``stem``, ``int`` or ``map``) that joins, checked on real data.

    Region shard ``k`` holds exactly the images whose id hashes to ``k``, so reading a few shards
    whole and the captions' urls tells exactly how many captions of those shards join under each
    key. Shards are read until every candidate key has ``enough`` captions there, or all are read.
    ``auto`` picks the key that joins most; any key that joins none is an error naming the keys
    tried and a few ids from each side.
    """
    modes = ["map"] if id_map is not None else (["stem", "int"] if mode == "auto" else [mode])
    stems = []
    with open_text(captions) as f:
        for line in f:
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) == 2 and image_id_from_url(cols[1].strip()):
                stems.append(image_id_from_url(cols[1].strip()))
    if not stems:  # nothing to join: the phrases stage reports the empty input
        return "stem" if mode == "auto" and id_map is None else ("map" if id_map is not None else mode)
    n = len(shards)
    keys = {m: {k for s in stems if (k := image_key(s, "stem" if m == "map" else m, id_map)) is not None} for m in modes}
    by_shard = {m: defaultdict(set) for m in modes}
    for m in modes:
        for k in keys[m]:
            by_shard[m][shard_index(k, n)].add(k)
    region_ids: set[str] = set()
    read: set[int] = set()
    for index, path in shards:
        region_ids.update(_region_ids(path))
        read.add(index)
        if region_ids and all(sum(len(by_shard[m][i]) for i in read) >= enough for m in modes):
            break
    hits = {m: sum(len(by_shard[m][i] & region_ids) for i in read) for m in modes}
    best = max(modes, key=lambda m: hits[m])  # ties: the first listed (stem before int)
    if hits[best] == 0:
        tried = {m: sorted(keys[m])[:3] for m in modes}
        raise ValueError(no_join_message(f"caption of {captions}", tried, sorted(region_ids), fs.dirname(shards[0][1])))
    return best
