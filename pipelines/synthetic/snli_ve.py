"""Synthetic SNLI-VE over the synthetic corpus's scenes, in the published layout.

``python -m pipelines.synthetic.snli_ve --out DIR --num-images N --seed S [--hypotheses-per-label K]
[--corpus CORPUS_DIR]`` writes ``snli_ve_{train,dev,test}.jsonl`` (SNLI records with the premise image
as ``Flickr30K_ID``: ``Flickr30K_ID``, ``captionID``, ``pairID``, ``sentence1`` (a caption of the
scene), ``sentence2`` (the hypothesis), ``gold_label``, ``annotator_labels``) and ``_MANIFEST.json``.

``Flickr30K_ID`` is the corpus's image id (``"000017"``), the stem of its region samples. Per image,
``K`` hypotheses of each class (exactly balanced), each true to the scene:

* entailment: a present coloured shape ("There is a red circle."), the number of shapes, a true
  relation between two objects named by their minimal referring expressions;
* contradiction: an absent coloured shape, a wrong number of shapes, the opposite relation;
* neutral: what the picture cannot show ("The red circle is made of paper.", "The square was drawn
  before the star.", "The picture was drawn by a child.").

Split by image (80 / 10 / 10). Everything about image ``i`` comes from ``default_rng([seed, i, VE_STREAM])``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.language import make_caption, referring_expressions
from pipelines.synthetic.scene import COLOURS, SHAPES, Scene, spatial_relation
from pipelines.synthetic.task_files import cli, write_dataset
from pipelines.synthetic.vqa import OPPOSITE

GENERATOR_VERSION = "1"
KIND = "ssga-synthetic-snli-ve"
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
LABELS = ("entailment", "neutral", "contradiction")
VE_STREAM = 0x5645  # "VE"
MATERIALS = ("paper", "wood", "metal", "glass", "plastic")
NEUTRAL_SCENE = ("The picture was drawn by a child.", "The shapes are about to move.", "The picture hangs in a museum.",
                 "Someone drew this picture yesterday.", "The shapes were cut out with scissors.")  # fmt: skip
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven")


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _entailment(scene: Scene, rng: np.random.Generator) -> str:
    kind = int(rng.integers(3)) if len(scene.objects) > 1 else int(rng.integers(2))
    if kind == 0:
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        return f"There is {_article(o.colour + ' ' + o.shape)}."
    if kind == 1:
        return f"There are {WORDS[len(scene.objects)]} shapes in the picture."
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    ex = referring_expressions(scene)
    return f"{_cap(ex[i][0].text)} is {spatial_relation(scene.objects[i], scene.objects[j])} {ex[j][0].text}."


def _contradiction(scene: Scene, rng: np.random.Generator) -> str:
    kind = int(rng.integers(3)) if len(scene.objects) > 1 else int(rng.integers(2))
    if kind == 0:
        present = {(o.colour, o.shape) for o in scene.objects}
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        c, s = absent[int(rng.integers(len(absent)))]
        return f"There is {_article(c + ' ' + s)}."
    if kind == 1:
        wrong = [n for n in range(1, len(WORDS)) if n != len(scene.objects)]
        return f"There are {WORDS[wrong[int(rng.integers(len(wrong)))]]} shapes in the picture."
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    ex = referring_expressions(scene)
    return f"{_cap(ex[i][0].text)} is {OPPOSITE[spatial_relation(scene.objects[i], scene.objects[j])]} {ex[j][0].text}."


def _neutral(scene: Scene, rng: np.random.Generator) -> str:
    ex = referring_expressions(scene)
    kind = int(rng.integers(3)) if len(scene.objects) > 1 else int(rng.choice([0, 2]))
    if kind == 0:
        i = int(rng.integers(len(scene.objects)))
        return f"{_cap(ex[i][0].text)} is made of {rng.choice(MATERIALS)}."
    if kind == 1:
        i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
        return f"{_cap(ex[i][0].text)} was drawn before {ex[j][0].text}."
    return str(rng.choice(NEUTRAL_SCENE))


_MAKE = {"entailment": _entailment, "neutral": _neutral, "contradiction": _contradiction}


def image_records(index: int, num_images: int, seed: int, hypotheses_per_label: int) -> tuple[str, list[dict]]:
    """``(split, records)`` of image ``index``: a function of ``(seed, index)`` only."""
    scene = generate_image(index, num_images, seed)[0]
    rng = np.random.default_rng([seed, index, VE_STREAM])
    split = SPLITS[int(rng.choice(len(SPLITS), p=[p for _, p in SPLITS]))][0]
    fid = scene.image_id
    caption = make_caption(scene, rng).text
    records, seen = [], set()
    for label in LABELS:
        for k in range(hypotheses_per_label):
            for _ in range(20):  # a fresh hypothesis if possible; a repeat is still a correct example
                hyp = _MAKE[label](scene, rng)
                if hyp not in seen:
                    break
            seen.add(hyp)
            records.append({
                "Flickr30K_ID": fid, "annotator_labels": [label], "captionID": f"{fid}.jpg#0", "gold_label": label,
                "pairID": f"{fid}.jpg#0r{k + 1}{label[0]}", "sentence1": caption, "sentence2": hyp,
            })  # fmt: skip
    return split, records


def generate_snli_ve(out: str | os.PathLike, num_images: int, seed: int = 0, hypotheses_per_label: int = 1) -> dict[str, Any]:
    """Write the synthetic SNLI-VE into ``out``. Returns the manifest."""
    if num_images < 1 or hypotheses_per_label < 1:
        raise ValueError("need --num-images >= 1 and --hypotheses-per-label >= 1")
    lines: dict[str, list[str]] = {s: [] for s, _ in SPLITS}
    counts: dict[str, Any] = {s: {"images": 0, **{lab: 0 for lab in LABELS}} for s, _ in SPLITS}
    for index in range(num_images):
        split, records = image_records(index, num_images, seed, hypotheses_per_label)
        lines[split].extend(json.dumps(r) for r in records)
        counts[split]["images"] += 1
        for r in records:
            counts[split][r["gold_label"]] += 1
    files = {f"snli_ve_{s}.jsonl": "".join(line + "\n" for line in lines[s]) for s, _ in SPLITS}
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_images": num_images, "hypotheses_per_label": hypotheses_per_label}
    return write_dataset(out, KIND, files, params, counts, {"image_id": "Flickr30K_ID = corpus image id (join region shards by stem)"})


def main(argv: list[str] | None = None) -> None:
    def extra(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--hypotheses-per-label", type=int, default=1)

    cli("python -m pipelines.synthetic.snli_ve", "Synthetic SNLI-VE over the synthetic corpus's scenes.", generate_snli_ve, extra, argv)


if __name__ == "__main__":
    main()
