"""Synthetic NLVR2 over the synthetic corpus's scenes, in the published layout.

``python -m pipelines.synthetic.nlvr2 --out DIR --num-images N --seed S [--dev-fraction F]
[--sentences-per-set K] [--corpus CORPUS_DIR]`` writes::

    train.json, dev.json   one NLVR2 record per line: identifier, sentence, label "True"/"False",
                           left_url, right_url, synset, writer (train adds directory)
    images.tsv             id map <NLVR2 image stem><TAB><corpus image id> (``--id-map`` of the join)
    _MANIFEST.json         params, counts, label balance, file digests

**Pairs and sets.** Pair ``p`` shows corpus images ``2p`` (left, ``-img0``) and ``2p+1`` (right,
``-img1``); sets are two consecutive pairs (the last may hold one), as NLVR2 pairs one sentence with
several image pairs of its set. Identifiers are ``<split>-<set>-<pair>-<sentence>``; ``N // 2`` pairs.

**Statements** about a pair: counts in the left / right image, a coloured shape present in one
image, one image having a shape the other lacks, both images having a shape, more of a shape on the
left, the total number of shapes. For each sentence a target truth pattern over the set's pairs is
drawn uniformly and the first of up to 300 drawn candidate statements with that pattern is kept
(else one matching the first pair): labels are balanced, and every label is the statement's truth on
that pair. Everything about set ``s`` comes from ``default_rng([seed, s, NLVR2_STREAM])``.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.scene import COLOURS, SHAPES, Scene
from pipelines.synthetic.task_files import cli, write_dataset

GENERATOR_VERSION = "1"
KIND = "ssga-synthetic-nlvr2"
SPLITS = ("train", "dev")
NLVR2_STREAM = 0x4E4C  # "NL"
PAIRS_PER_SET = 2
CANDIDATES = 300
WORDS = ("no", "one", "two", "three", "four", "five")

Pair = tuple[Scene, Scene]


def _n(scene: Scene, shape: str = "", colour: str = "") -> int:
    return sum((not shape or o.shape == shape) and (not colour or o.colour == colour) for o in scene.objects)


def _plural(n: int, shape: str) -> str:
    return f"{WORDS[n]} {shape}" + ("s" if n != 1 else "")


def candidate(rng: np.random.Generator) -> tuple[str, Callable[[Pair], bool]]:
    """One random statement and its truth as a function of a pair (left, right)."""
    kind = int(rng.integers(6))
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    if kind == 0:
        side, n = int(rng.integers(2)), int(rng.integers(1, 4))
        return (f"The {('left', 'right')[side]} image contains exactly {_plural(n, shape)}.", lambda p: _n(p[side], shape) == n)
    if kind == 1:
        side = int(rng.integers(2))
        return (f"The {('left', 'right')[side]} image contains a {colour} {shape}.", lambda p: _n(p[side], shape, colour) > 0)
    if kind == 2:
        return (f"One image contains a {shape} and the other image does not.", lambda p: (_n(p[0], shape) > 0) != (_n(p[1], shape) > 0))
    if kind == 3:
        return (f"Both images contain at least one {shape}.", lambda p: _n(p[0], shape) > 0 and _n(p[1], shape) > 0)
    if kind == 4:
        return (f"The left image contains more {shape}s than the right image.", lambda p: _n(p[0], shape) > _n(p[1], shape))
    total = int(rng.integers(4, 9))
    return (f"There are {total} shapes in the two images together.", lambda p: len(p[0].objects) + len(p[1].objects) == total)


def set_records(s: int, num_images: int, seed: int, sentences_per_set: int, dev_fraction: float) -> tuple[str, list[dict], dict[str, str]]:
    """``(split, records, {image stem: corpus image id})`` of set ``s``: a function of ``(seed, s)`` only."""
    rng = np.random.default_rng([seed, s, NLVR2_STREAM])
    split = SPLITS[1] if rng.random() < dev_fraction else SPLITS[0]
    first = s * PAIRS_PER_SET
    pairs: list[Pair] = [
        (generate_image(2 * p, num_images, seed)[0], generate_image(2 * p + 1, num_images, seed)[0])
        for p in range(first, min(first + PAIRS_PER_SET, num_images // 2))
    ]
    ids: dict[str, str] = {}
    for j, (left, right) in enumerate(pairs):
        ids[f"{split}-{s}-{j}-img0"], ids[f"{split}-{s}-{j}-img1"] = left.image_id, right.image_id
    records: list[dict] = []
    used: set[str] = set()
    for k in range(sentences_per_set):
        target = [bool(rng.random() < 0.5) for _ in pairs]
        fallback = None
        for _ in range(CANDIDATES):
            sentence, truth = candidate(rng)
            if sentence in used:
                continue
            got = [truth(p) for p in pairs]
            if got == target:
                break
            if fallback is None and got[0] == target[0]:
                fallback = (sentence, truth)
        else:
            if fallback is None:
                continue
            sentence, truth = fallback
        used.add(sentence)
        for j, (left, right) in enumerate(pairs):
            rec = {"identifier": f"{split}-{s}-{j}-{k}", "sentence": sentence, "label": "True" if truth((left, right)) else "False",
                   "left_url": f"images/{left.image_id}.png", "right_url": f"images/{right.image_id}.png", "synset": "shapes", "writer": "synthetic"}  # fmt: skip
            if split == "train":
                rec["directory"] = s % 100
            records.append(rec)
    return split, records, ids


def generate_nlvr2(out: str | os.PathLike, num_images: int, seed: int = 0, sentences_per_set: int = 4, dev_fraction: float = 0.2) -> dict[str, Any]:
    """Write the synthetic NLVR2 into ``out``. Returns the manifest."""
    if num_images < 2 or sentences_per_set < 1 or not 0.0 <= dev_fraction <= 1.0:
        raise ValueError("need --num-images >= 2 (two per pair), --sentences-per-set >= 1 and 0 <= --dev-fraction <= 1")
    num_pairs = num_images // 2
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    id_map: dict[str, str] = {}
    counts: dict[str, Any] = {s: {"examples": 0, "true": 0, "sets": 0} for s in SPLITS}
    for s in range((num_pairs + PAIRS_PER_SET - 1) // PAIRS_PER_SET):
        split, records, ids = set_records(s, num_images, seed, sentences_per_set, dev_fraction)
        id_map.update(ids)
        lines[split].extend(json.dumps(r) for r in records)
        counts[split]["examples"] += len(records)
        counts[split]["true"] += sum(r["label"] == "True" for r in records)
        counts[split]["sets"] += 1
    files = {f"{s}.json": "".join(line + "\n" for line in lines[s]) for s in SPLITS}
    files["images.tsv"] = "".join(f"{k}\t{v}\n" for k, v in sorted(id_map.items()))
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_images": num_images, "sentences_per_set": sentences_per_set, "dev_fraction": dev_fraction}
    notes = {"image_id": "images.tsv maps each NLVR2 image stem to its corpus image id: join region shards with --id-map images.tsv"}
    return write_dataset(out, KIND, files, params, counts, notes)


def main(argv: list[str] | None = None) -> None:
    def extra(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--sentences-per-set", type=int, default=4)
        ap.add_argument("--dev-fraction", type=float, default=0.2, help="share of sets in dev (the rest train)")

    cli("python -m pipelines.synthetic.nlvr2", "Synthetic NLVR2 over the synthetic corpus's scenes.", generate_nlvr2, extra, argv)


if __name__ == "__main__":
    main()
