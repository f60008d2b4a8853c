"""Synthetic VCR over the synthetic corpus's scenes, in the published layout.

``python -m pipelines.synthetic.vcr --out DIR --num-images N --seed S [--val-fraction F]
[--questions-per-image K] [--corpus CORPUS_DIR]`` writes::

    train.jsonl, val.jsonl                       one VCR record per line (annot_id, img_fn, metadata_fn,
                                                 objects, question, answer_choices, answer_label,
                                                 rationale_choices, rationale_label, movie, img_id, ...)
    vcr1images/synthetic_shapes/<image_id>.json  metadata: boxes [x1, y1, x2, y2, score], segms, names, width, height
    _MANIFEST.json                               params, counts, label histograms, file digests

Image ``i`` is the corpus's scene ``i`` (:func:`pipelines.synthetic.corpus.generate_image`, same seed);
``img_fn`` is ``synthetic_shapes/<image_id>.png`` whose stem is the corpus's region image id, so the
reader joins region shards by ``stem``. ``objects`` lists every scene object's shape (index = object
index); metadata boxes are the scene's tight boxes (continuous, exclusive end, as VCR's), score
``1.0``, ``segms`` the box outline as one polygon.

**Questions** (texts are token lists; ``[i]`` refers to object ``i``), four choices each, exactly one
true of the scene, the true one placed at a uniformly drawn position (balanced labels):

* colour: "What color is [i] ?" / "It is <c> ." / rationale "[i] is a <c> <shape> ." vs. wrong
  colour and/or shape;
* relation: "Where is [i] relative to [j] ?" / "It is <rel> [j] ." over the four relations, the true
  one the dominant axis (:func:`pipelines.synthetic.scene.spatial_relation`) / rationale "The
  <horizontal|vertical> gap between [i] and [j] is the larger one ." + side;
* count: "How many <shape>s are there ?" / "There are <n> ." / rationale "[a, b] are the <shape>s ."
  naming exactly that shape's objects vs. other object sets.

Everything about image ``i`` comes from ``default_rng([seed, i, VCR_STREAM])``: deterministic by seed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.scene import COLOURS, SHAPES, Scene, spatial_relation
from pipelines.synthetic.task_files import cli, write_dataset

GENERATOR_VERSION = "1"
KIND = "ssga-synthetic-vcr"
MOVIE = "synthetic_shapes"
SPLITS = ("train", "val")
VCR_STREAM = 0x5643  # "VC"
KINDS = ("colour", "relation", "count")
RELATIONS = ("to the left of", "to the right of", "above", "below")
GAPS = {"to the left of": ("horizontal", "on", "the", "left"), "to the right of": ("horizontal", "on", "the", "right"),
        "above": ("vertical", "on", "top"), "below": ("vertical", "underneath")}  # fmt: skip


def _place(correct: list, wrong: list, rng: np.random.Generator) -> tuple[list, int]:
    """The four choices with the true one at a uniformly drawn position."""
    label = int(rng.integers(4))
    wrong = [wrong[int(k)] for k in rng.permutation(len(wrong))[:3]]
    return wrong[:label] + [correct] + wrong[label:], label


def _colour_q(scene: Scene, rng: np.random.Generator) -> dict | None:
    i = int(rng.integers(len(scene.objects)))
    o = scene.objects[i]
    others = [c for c in COLOURS if c != o.colour]
    answers, a = _place(["It", "is", o.colour, "."], [["It", "is", c, "."] for c in others], rng)
    other_shape = str(rng.choice([s for s in SHAPES if s != o.shape]))
    wrong_r = [[[i], "is", "a", str(rng.choice(others)), o.shape, "."], [[i], "is", "a", o.colour, other_shape, "."],
               [[i], "is", "a", str(rng.choice(others)), other_shape, "."]]  # fmt: skip
    rationales, r = _place([[i], "is", "a", o.colour, o.shape, "."], wrong_r, rng)
    return {"question": ["What", "color", "is", [i], "?"], "answer_choices": answers, "answer_label": a, "rationale_choices": rationales, "rationale_label": r}


def _relation_q(scene: Scene, rng: np.random.Generator) -> dict | None:
    if len(scene.objects) < 2:
        return None
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    rel = spatial_relation(scene.objects[i], scene.objects[j])
    choice = lambda r: ["It", "is", *r.split(), [j], "."]  # noqa: E731
    answers, a = _place(choice(rel), [choice(r) for r in RELATIONS if r != rel], rng)
    gap = lambda r: ["The", GAPS[r][0], "gap", "between", [i], "and", [j], "is", "the", "larger", "one", ",", "with", [i], *GAPS[r][1:], "."]  # noqa: E731
    rationales, r = _place(gap(rel), [gap(x) for x in RELATIONS if x != rel], rng)
    return {"question": ["Where", "is", [i], "relative", "to", [j], "?"], "answer_choices": answers, "answer_label": a, "rationale_choices": rationales, "rationale_label": r}


def _count_q(scene: Scene, rng: np.random.Generator) -> dict | None:
    shape = scene.objects[int(rng.integers(len(scene.objects)))].shape
    members = [k for k, o in enumerate(scene.objects) if o.shape == shape]
    n = len(members)
    numbers = [m for m in range(0, 7) if m != n]
    answers, a = _place(["There", "are" if n != 1 else "is", str(n), "."], [["There", "are" if m != 1 else "is", str(m), "."] for m in numbers], rng)
    subsets = [list(s) for k in range(1, len(scene.objects) + 1) for s in itertools.combinations(range(len(scene.objects)), k) if list(s) != members]
    if len(subsets) < 3:
        return None
    say = lambda s: [s, "are" if len(s) > 1 else "is", "the", shape + "s" if len(s) > 1 else shape, "."]  # noqa: E731
    # "[a, b] are the circles": a false set for any other subset, whatever its size (plural agrees with the set).
    rationales, r = _place(say(members), [say(s) for s in subsets], rng)
    return {"question": ["How", "many", shape + "s", "are", "there", "?"], "answer_choices": answers, "answer_label": a, "rationale_choices": rationales, "rationale_label": r}


ASK: dict[str, Callable[[Scene, np.random.Generator], dict | None]] = {"colour": _colour_q, "relation": _relation_q, "count": _count_q}


def _orig(tokens: list) -> str:
    """VCR's ``*_orig`` text: object references as 1-based numbers ("Does 3 feel comfortable?")."""
    return " ".join(" and ".join(str(i + 1) for i in t) if isinstance(t, list) else t for t in tokens)


def metadata_doc(scene: Scene) -> dict[str, Any]:
    boxes = [[float(v) for v in o.box] + [1.0] for o in scene.objects]
    segms = [[[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]] for x1, y1, x2, y2, _ in boxes]
    return {"boxes": boxes, "segms": segms, "names": [o.shape for o in scene.objects], "width": scene.width, "height": scene.height}


def image_records(index: int, num_images: int, seed: int, questions_per_image: int, val_fraction: float) -> tuple[str, Scene, list[dict]]:
    """``(split, scene, records without annot_id)`` of image ``index``: a function of ``(seed, index)`` only."""
    scene = generate_image(index, num_images, seed)[0]
    rng = np.random.default_rng([seed, index, VCR_STREAM])
    split = SPLITS[1] if rng.random() < val_fraction else SPLITS[0]
    records: list[dict] = []
    for k in range(questions_per_image):
        q = ASK[KINDS[k % len(KINDS)]](scene, rng)
        if q is None:
            q = _colour_q(scene, rng)  # always applies
        records.append({
            "movie": MOVIE, "objects": [o.shape for o in scene.objects], "img_fn": f"{MOVIE}/{scene.image_id}.png",
            "metadata_fn": f"{MOVIE}/{scene.image_id}.json", "question_orig": _orig(q["question"]),
            "answer_orig": _orig(q["answer_choices"][q["answer_label"]]), "rationale_orig": _orig(q["rationale_choices"][q["rationale_label"]]),
            **q, "question_number": k,
        })  # fmt: skip
    return split, scene, records


def generate_vcr(out: str | os.PathLike, num_images: int, seed: int = 0, questions_per_image: int = 3, val_fraction: float = 0.2) -> dict[str, Any]:
    """Write the synthetic VCR into ``out``. Returns the manifest."""
    if num_images < 1 or questions_per_image < 1 or not 0.0 <= val_fraction <= 1.0:
        raise ValueError("need --num-images >= 1, --questions-per-image >= 1 and 0 <= --val-fraction <= 1")
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    files: dict[str, str] = {}
    counts: dict[str, Any] = {s: {"images": 0, "questions": 0, "answer_label": Counter(), "rationale_label": Counter()} for s in SPLITS}
    for index in range(num_images):
        split, scene, records = image_records(index, num_images, seed, questions_per_image, val_fraction)
        c = counts[split]
        for rec in records:
            n = c["questions"]
            rec.update(annot_id=f"{split}-{n}", img_id=f"{split}-{c['images']}", match_fold=f"{split}-{n}", match_index=n)
            lines[split].append(json.dumps(rec))
            c["questions"] += 1
            c["answer_label"][rec["answer_label"]] += 1
            c["rationale_label"][rec["rationale_label"]] += 1
        c["images"] += 1
        files[f"vcr1images/{MOVIE}/{scene.image_id}.json"] = json.dumps(metadata_doc(scene)) + "\n"
    for s in SPLITS:
        files[f"{s}.jsonl"] = "".join(line + "\n" for line in lines[s])
        for key in ("answer_label", "rationale_label"):
            counts[s][key] = {str(k): v for k, v in sorted(counts[s][key].items())}
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_images": num_images, "questions_per_image": questions_per_image, "val_fraction": val_fraction}
    notes = {"image_id": "img_fn stem = corpus image id (join region shards by stem)", "metadata": "vcr1images/<metadata_fn>; boxes continuous xyxy, exclusive end"}
    return write_dataset(out, KIND, files, params, counts, notes)


def main(argv: list[str] | None = None) -> None:
    def extra(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--questions-per-image", type=int, default=3)
        ap.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val (the rest train)")

    cli("python -m pipelines.synthetic.vcr", "Synthetic VCR over the synthetic corpus's scenes.", generate_vcr, extra, argv)


if __name__ == "__main__":
    main()
