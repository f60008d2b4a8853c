"""How often an ITM negative is in fact true of its image, judged against the synthetic corpus's scenes.

    python scripts/itm_negative_truth.py --corpus C --regions R --labels L [--seed S] [--group 64]

C is a ``pipelines.synthetic`` corpus (its manifest gives the generator's seed and image count, so
each image's scene is redrawn exactly), R/L its region and label shards. The negatives are the ones
``trainer.eval_itm`` scores (same draws). A noun phrase of a negative caption "holds" when the scene
has an object with every colour, size and shape word the phrase names; a negative whose every
phrase holds may be a true caption (a false negative), up to the relations it states. Relation
edits take the converse of a stated relation, so they contradict the caption by construction.
This script imports both halves (pipelines for the scenes, trainer for the negatives); the trainer
itself never imports the pipelines.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.corpus import image_id_of
from pipelines.synthetic.scene import COLOURS, SHAPES, SIZES, draw_scene
from schemas.discovery import shard_dir
from schemas.shards import LABEL_PREFIX
from trainer.data.examples import itm_kind, tokenize
from trainer.data.hard_negatives import words
from trainer.data.read import SkipCounter, decode_pairs, to_examples, zip_label_shards
from trainer.data.shard_set import region_shards
from trainer.data.text import load_tokenizer
from trainer.eval_itm import itm_eval_examples


def phrase_holds(phrase: str, scene) -> bool:
    w = words(phrase)
    want = {"colour": [x for x in w if x in COLOURS], "size": [x for x in w if x in SIZES], "shape": [x for x in w if x in SHAPES]}
    return any(all(getattr(o, attr) == v for attr, vs in want.items() for v in vs) for o in scene.objects)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--regions", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group", type=int, default=64)
    a = ap.parse_args()
    m = json.loads((Path(a.corpus) / "_MANIFEST.json").read_text())
    params = m.get("params", m)
    corpus_seed, n = int(params["seed"]), int(params["num_images"])
    tok = load_tokenizer("minilm")
    skips = SkipCounter()
    src = ({"url": s} for s in region_shards(a.regions))
    src = to_examples(decode_pairs(zip_label_shards(src, str(shard_dir(a.labels, LABEL_PREFIX)), skips), skips), 36, skips)
    counts: dict[str, list[int]] = {}
    for ex in itm_eval_examples(tokenize(src, tok, 36, skips), a.group, a.seed, tok, 36):
        kind = itm_kind(ex["uid"])
        index = int(ex["image_id"])
        scene = draw_scene(image_id_of(index, n), np.random.default_rng([corpus_seed, index]))
        label = f"hard/{ex['itm_edit'].kind}" if kind == "hard" else kind  # positives: the check's calibration (1.0)
        holds = all(phrase_holds(ex["text"][s:e], scene) for s, e in ex["spans"])
        counts.setdefault(label, []).append(int(holds))
    for label, v in sorted(counts.items()):
        print(f"{label:<16} n={len(v):>4}  every phrase true of the image: {np.mean(v):.3f}")


if __name__ == "__main__":
    main()
