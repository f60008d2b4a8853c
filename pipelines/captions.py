"""Conceptual-Captions style TSV (``caption<TAB>url``, no header) → :class:`schemas.records.Caption`.

The image of a caption is the basename of its url without extension; ``caption_id`` is
``"<image_id>#<k>"`` with ``k`` the k-th row of that image in file order. ``k`` advances for every
row whose image is known, even when the caption itself is rejected, so ids stay aligned with
files that follow the same order (Flickr30k Entities ``Sentences/<image_id>.txt``).
"""
from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from typing import Iterator

from pipelines.remote_io import open_text
from schemas.manifest import dead_letter
from schemas.records import Caption, caption_problem

STAGE = "phrases"


def image_id_from_url(url: str) -> str:
    """``images/000017.png`` → ``000017`` (also for ``http://host/a/b.jpg?x=1``)."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    base = posixpath.basename(path)
    return os.path.splitext(base)[0]


def caption_sort_key(caption_id: str) -> tuple[str, int, str]:
    """Order captions of an image by their numeric index (``#10`` after ``#9``)."""
    image, _, k = caption_id.rpartition("#")
    return (image, int(k), "") if k.isdigit() else (caption_id, -1, caption_id)


def read_captions(path: str) -> Iterator[tuple[str, object]]:
    """Yield ``("caption", Caption)`` or ``("dead", dead_letter)`` for every non-blank row, in order."""
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
            image_id = image_id_from_url(url)
            if not image_id:
                yield "dead", dead_letter(STAGE, where, path, f"url {url!r} has no file name to take the image id from")
                continue
            k = seen[image_id]
            seen[image_id] += 1
            cap = Caption(caption_id=f"{image_id}#{k}", image_id=image_id, text=text, url=url)
            reason = caption_problem(cap)
            if reason:
                yield "dead", dead_letter(STAGE, cap.caption_id, where, reason)
            else:
                yield "caption", cap
