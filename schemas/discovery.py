"""Where a stage's shards are: list a directory's shards, follow a stage's CURRENT pointer, find the directory a user names.

Local paths and ``gs://`` / ``s3://`` URLs alike (:mod:`ssga_io.fs`). Both halves find shards only
through these functions, so the layout (``<stage>/<fingerprint>/<prefix>-NNNNNN.tar`` with
``<stage>/CURRENT`` naming the published fingerprint) is written down once.
"""
from __future__ import annotations

import os
import re

from schemas.manifest import CURRENT_NAME
from ssga_io import fs

_INDEX = re.compile(r"-(\d{6})\.tar$")


def list_shards(directory: str | os.PathLike, prefix: str) -> list[str]:
    """Published ``<prefix>-NNNNNN.tar`` shards of one directory, in index order (temp files are hidden by their dot)."""
    return sorted(fs.glob(fs.join(directory, f"{prefix}-[0-9][0-9][0-9][0-9][0-9][0-9].tar")))


def indexed_shards(directory: str | os.PathLike, prefix: str) -> list[tuple[int, str]]:
    """``[(shard index, path)]`` of one directory (the index from the file name); none is an error."""
    out = [(int(_INDEX.search(p).group(1)), p) for p in list_shards(directory, prefix)]
    if not out:
        raise FileNotFoundError(f"{directory}: no {prefix}-NNNNNN.tar shards")
    return out


def current_output(stage_root: str | os.PathLike) -> str | None:
    """``<stage_root>/<fp>`` named by ``<stage_root>/CURRENT``; None when there is no pointer."""
    pointer = fs.join(stage_root, CURRENT_NAME)
    if not fs.exists(pointer) or (not fs.is_remote(pointer) and not os.path.isfile(pointer)):
        return None
    fp = fs.read_text(pointer).strip()
    if not fp or "/" in fp or fp.startswith("."):
        raise ValueError(f"{pointer}: not a fingerprint: {fp!r}")
    return fs.join(stage_root, fp)


def shard_dir(directory: str | os.PathLike, prefix: str) -> str:
    """The directory holding ``<prefix>-NNNNNN.tar`` that a user named: ``directory`` itself, its
    ``<prefix>/`` child, or the output either one's CURRENT points at.

    The pipelines publish ``OUT/labels/<fingerprint>/labels-*.tar`` and name the current one in
    ``OUT/labels/CURRENT``, so ``--labels OUT``, ``--labels OUT/labels`` and ``--labels OUT/labels/<fp>`` all work.
    """
    candidates = [str(directory), fs.join(directory, prefix)]
    candidates += [c for c in map(current_output, candidates) if c is not None]
    for d in candidates:
        if list_shards(d, prefix):
            return d
    make = {"regions": "python -m pipelines.regions (--tsv/--npz-dir/--npy-dir ... --out DIR)",
            "labels": "make labels, or python -m pipelines.dag labels"}.get(prefix)
    hint = f"; make them with {make}" if make else ""
    raise FileNotFoundError(f"{directory}: no {prefix}-NNNNNN.tar shards (nor in {fs.join(directory, prefix)}){hint}")
