"""Synthetic VQA 2.0 over the synthetic corpus's scenes, in the published layout.

``python -m pipelines.synthetic.vqa --out DIR --num-images N --seed S [--val-fraction F]
[--questions-per-image K] [--corpus CORPUS_DIR]`` writes::

    v2_OpenEnded_mscoco_{train2014,val2014}_questions.json   {info, task_type, data_type, data_subtype, license, questions}
    v2_mscoco_{train2014,val2014}_annotations.json           {info, license, data_type, data_subtype, annotations}
    _MANIFEST.json                                           params, counts per split / answer type, file digests

**Images.** Image ``i`` is the corpus's scene ``i`` (:func:`pipelines.synthetic.corpus.generate_image`
with the same seed), so the questions are about exactly the images, regions and captions that
``python -m pipelines.synthetic`` writes with that seed. The COCO-style integer ``image_id`` is the
integer of the corpus's image id: ``"000017"`` → ``17`` (= the index; refer/instances.json uses it
too). Region shards ingested from the corpus carry ``"000017"``: the reader joins them with the
``int`` key. ``question_id = image_id * 1000 + k`` as in VQA 2.0 (``458752000``, ``458752001``, ...).

**Questions** (``question_type`` = the longest of the official 65 COCO question types that
starts the question, else ``"none of the above"``, as VQA assigns it): colour ("What color is the
square?", other), shape ("What is the red shape?", other), count ("How many circles are there?",
number), existence ("Is there a blue star?", yes/no, half of them true) and relative position ("Is
the green circle to the left of the square?", yes/no, half true). Objects are named by their
minimal unique referring expression (:mod:`pipelines.synthetic.language`), never by the attribute
asked about. Default mix per image: one of each kind, so about 40% other, 20% number, 40% yes/no
(VQA 2.0 val: 50 / 12 / 38).

**Ten answers** with realistic disagreement: each question draws an error rate (Beta(1, 12), mean
~8%); each annotator gives a wrong answer at that rate (another colour or shape, a count off by
one, the opposite yes/no), else a synonym now and then ("violet" for purple, "disc"/"round" for
circle, "rhombus" for diamond), else the truth. Answers are lower case with digits, as the
published annotations are. ``multiple_choice_answer`` is the most frequent answer (ties:
alphabetical). Everything about image ``i`` comes from ``default_rng([seed, i, VQA_STREAM])``:
deterministic by seed, and independent of the corpus's own random stream.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from typing import Any

import numpy as np

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.language import referring_expressions
from pipelines.synthetic.scene import COLOURS, SHAPES, Scene, spatial_relation
from pipelines.synthetic.task_files import MANIFEST, cli, write_dataset  # noqa: F401  (MANIFEST: callers read it here)

GENERATOR_VERSION = "1"
KIND = "ssga-synthetic-vqa"
QUESTIONS_FILE = "v2_OpenEnded_mscoco_{split}_questions.json"  # the published names (trainer.tasks.vqa.reader reads them)
ANNOTATIONS_FILE = "v2_mscoco_{split}_annotations.json"
SPLITS = ("train2014", "val2014")
VQA_STREAM = 0x5651  # "VQ": this generator's random stream, apart from the corpus's
KINDS = ("colour", "shape", "count", "exists", "relation")
# GT-Vision-Lab/VQA QuestionTypes/mscoco_question_types.txt (the 65 types of VQA 2.0's question_type)
QUESTION_TYPES = (
    "how many", "is the", "what", "what color is the", "what is the", "is this", "is this a", "what is", "are the",
    "what kind of", "is there a", "what type of", "is it", "what are the", "where is the", "is there", "does the",
    "what color are the", "are these", "are there", "which", "is", "what is the man", "is the man", "are", "how",
    "does this", "what is on the", "what does the", "how many people are", "what is in the", "what is this", "do",
    "what are", "are they", "what time", "what sport is", "are there any", "is he", "what color is", "why",
    "where are the", "what color", "who is", "what animal is", "is the woman", "is this an", "do you",
    "how many people are in", "what room is", "has", "is this person", "what is the woman", "can you", "why is the",
    "is the person", "what is the color of the", "what is the person", "could", "was", "is that a", "what number is",
    "what is the name", "what brand",
)  # fmt: skip
COLOUR_SYNONYMS = {"purple": ("violet",), "yellow": ("gold",), "orange": ("dark orange",), "green": ("dark green",)}
SHAPE_SYNONYMS = {"circle": ("disc", "round"), "diamond": ("rhombus",), "square": ("rectangle",)}
OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
SYNONYM_RATE = 0.15
INFO = {"description": "ssga synthetic VQA in the VQA 2.0 layout", "version": "2.0", "year": 2026, "contributor": "ssga"}
LICENSE = {"name": "CC0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}


def coco_image_id(corpus_image_id: str) -> int:
    """The COCO-style integer id of a corpus image: the integer of its id (``"000017"`` → 17)."""
    return int(corpus_image_id)


def question_type_of(question: str) -> str:
    """The longest official question type whose words start the question (VQA's assignment)."""
    words = question.lower().rstrip("?").split()
    best = ""
    for t in QUESTION_TYPES:
        tw = t.split()
        if words[: len(tw)] == tw and len(t) > len(best):
            best = t
    return best or "none of the above"


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _ask_colour(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str] | None:
    exprs = referring_expressions(scene)
    ok = [i for i, o in enumerate(scene.objects) if o.colour not in exprs[i][0].text.split()]
    if ok:
        i = ok[int(rng.integers(len(ok)))]
        return f"What color is {exprs[i][0].text}?", scene.objects[i].colour, "other"
    # Every object is named by its colour (same-shape twins): name one by an extreme position instead.
    where = [("on the far left", lambda o: o.centre[0]), ("on the far right", lambda o: -o.centre[0]),
             ("at the very top", lambda o: o.centre[1]), ("at the very bottom", lambda o: -o.centre[1])]  # fmt: skip
    name, key = where[int(rng.integers(len(where)))]
    ranked = sorted(scene.objects, key=key)
    if len(ranked) > 1 and key(ranked[0]) == key(ranked[1]):
        return None  # a tie: "the shape on the far left" would not name one object
    return f"What color is the shape {name}?", ranked[0].colour, "other"


def _ask_shape(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str] | None:
    colours = Counter(o.colour for o in scene.objects)
    ok = [o for o in scene.objects if colours[o.colour] == 1]
    if not ok:
        return None
    o = ok[int(rng.integers(len(ok)))]
    template = ("What is the {} shape?", "What shape is the {} object?")[int(rng.integers(2))]
    return template.format(o.colour), o.shape, "other"


def _ask_count(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    if rng.random() < 0.5:
        shape = str(rng.choice(SHAPES)) if rng.random() < 0.2 else scene.objects[int(rng.integers(len(scene.objects)))].shape
        return f"How many {shape}s are there?", str(sum(o.shape == shape for o in scene.objects)), "number"
    colour = str(rng.choice(list(COLOURS))) if rng.random() < 0.2 else scene.objects[int(rng.integers(len(scene.objects)))].colour
    return f"How many {colour} shapes are there?", str(sum(o.colour == colour for o in scene.objects)), "number"


def _ask_exists(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    present = sorted({(o.colour, o.shape) for o in scene.objects})
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    if rng.random() < 0.5:
        colour, shape = present[int(rng.integers(len(present)))]
        answer = "yes"
    else:
        colour, shape = absent[int(rng.integers(len(absent)))]
        answer = "no"
    return f"Is there {_article(colour)} {shape}?", answer, "yes/no"


def _ask_relation(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str] | None:
    if len(scene.objects) < 2:
        return None
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    exprs = referring_expressions(scene)
    rel = spatial_relation(scene.objects[i], scene.objects[j])  # the dominant axis: its opposite is surely false
    truth = rng.random() < 0.5
    asked = rel if truth else OPPOSITE[rel]
    subject = exprs[i][0].text
    return f"Is {subject} {asked} {exprs[j][0].text}?", "yes" if truth else "no", "yes/no"


_ASK = {"colour": _ask_colour, "shape": _ask_shape, "count": _ask_count, "exists": _ask_exists, "relation": _ask_relation}


def _wrong(answer: str, kind: str, rng: np.random.Generator) -> str:
    if kind in ("colour",):
        return str(rng.choice([c for c in COLOURS if c != answer]))
    if kind == "shape":
        return str(rng.choice([s for s in SHAPES if s != answer]))
    if kind == "count":
        n = int(answer)
        return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)
    return "no" if answer == "yes" else "yes"


def ten_answers(answer: str, kind: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Ten annotators' answers (published layout) around the true ``answer``."""
    error_rate = float(rng.beta(1.0, 12.0))
    synonyms = COLOUR_SYNONYMS.get(answer, ()) if kind == "colour" else SHAPE_SYNONYMS.get(answer, ()) if kind == "shape" else ()
    out = []
    for k in range(10):
        if rng.random() < error_rate:
            given, confidence = _wrong(answer, kind, rng), str(rng.choice(["maybe", "no", "yes"], p=[0.5, 0.2, 0.3]))
        elif synonyms and rng.random() < SYNONYM_RATE:
            given, confidence = str(rng.choice(synonyms)), "yes"
        else:
            given, confidence = answer, "yes" if rng.random() < 0.9 else "maybe"
        out.append({"answer": given, "answer_confidence": confidence, "answer_id": k + 1})
    return out


def image_questions(index: int, num_images: int, seed: int, questions_per_image: int, val_fraction: float) -> tuple[str, list[dict], list[dict]]:
    """``(split, questions, annotations)`` of image ``index``: a function of ``(seed, index)`` only."""
    scene = generate_image(index, num_images, seed)[0]
    image_id = coco_image_id(scene.image_id)
    rng = np.random.default_rng([seed, index, VQA_STREAM])
    split = SPLITS[1] if rng.random() < val_fraction else SPLITS[0]
    questions, annotations, asked = [], [], set()
    for k in range(questions_per_image):
        kind = KINDS[k % len(KINDS)]
        got = _ASK[kind](scene, rng)
        for _ in range(8):  # not applicable (or asked already): fall back to a kind that always applies
            if got is not None and got[0] not in asked:
                break
            kind = ("count", "exists")[int(rng.integers(2))]
            got = _ASK[kind](scene, rng)
        if got is None or got[0] in asked:
            continue
        question, answer, answer_type = got
        asked.add(question)
        qid = image_id * 1000 + k
        answers = ten_answers(answer, kind, rng)
        counts = Counter(a["answer"] for a in answers)
        mc = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        questions.append({"image_id": image_id, "question": question, "question_id": qid})
        annotations.append({
            "question_type": question_type_of(question), "multiple_choice_answer": mc, "answers": answers,
            "image_id": image_id, "answer_type": answer_type, "question_id": qid,
        })  # fmt: skip
    return split, questions, annotations


def generate_vqa(out: str | os.PathLike, num_images: int, seed: int = 0, questions_per_image: int = 5, val_fraction: float = 0.2) -> dict[str, Any]:
    """Write the synthetic VQA into ``out`` (replacing a previous synthetic VQA there). Returns the manifest."""
    if num_images < 1 or not 1 <= questions_per_image < 1000 or not 0.0 <= val_fraction <= 1.0:
        raise ValueError("need --num-images >= 1, 1 <= --questions-per-image < 1000 and 0 <= --val-fraction <= 1")
    per_split: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    for index in range(num_images):
        split, qs, anns = image_questions(index, num_images, seed, questions_per_image, val_fraction)
        per_split[split][0].extend(qs)
        per_split[split][1].extend(anns)
    files: dict[str, str] = {}
    counts: dict[str, Any] = {}
    for split, (qs, anns) in per_split.items():
        qdoc = {"info": INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": LICENSE, "data_subtype": split, "questions": qs}
        adoc = {"info": INFO, "license": LICENSE, "data_subtype": split, "annotations": anns, "data_type": "mscoco"}
        files[QUESTIONS_FILE.format(split=split)] = json.dumps(qdoc) + "\n"
        files[ANNOTATIONS_FILE.format(split=split)] = json.dumps(adoc) + "\n"
        counts[split] = {
            "images": len({q["image_id"] for q in qs}), "questions": len(qs),
            "answer_types": dict(sorted(Counter(a["answer_type"] for a in anns).items())),
        }  # fmt: skip
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_images": num_images,
              "questions_per_image": questions_per_image, "val_fraction": val_fraction}  # fmt: skip
    notes = {"image_id": "COCO-style int = int(corpus image id), e.g. '000017' -> 17"}
    return write_dataset(out, KIND, files, params, counts, notes)


def main(argv: list[str] | None = None) -> None:
    def extra(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--questions-per-image", type=int, default=5)
        ap.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val2014 (the rest train2014)")

    def summary(m: dict) -> str:
        return ", ".join(f"{s}: {c['questions']} questions" for s, c in m["counts"].items())

    cli("python -m pipelines.synthetic.vqa", "Synthetic VQA 2.0 over the synthetic corpus's scenes.", generate_vqa, extra, argv, summary)


if __name__ == "__main__":
    main()
