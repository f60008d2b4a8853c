"""Synthetic SNLI-VE: deterministic by seed, exactly balanced classes, hypotheses true to their class
on the scene (entailment / contradiction re-checked from the scene), readable and joinable by stem."""
from __future__ import annotations

import re
from collections import Counter

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.language import referring_expressions
from pipelines.synthetic.scene import spatial_relation
from pipelines.synthetic.snli_ve import NEUTRAL_SCENE, WORDS, generate_snli_ve
from trainer.tasks.snli_ve import read_split
from trainer.tasks.vcr.join import join_image_names

N = 30


def _holds(h, scene):
    """Truth of an entailment/contradiction template on the scene."""
    if m := re.fullmatch(r"There is an? (\w+) (\w+)\.", h):
        return any(o.colour == m[1] and o.shape == m[2] for o in scene.objects)
    if m := re.fullmatch(r"There are (\w+) shapes in the picture\.", h):
        return WORDS.index(m[1]) == len(scene.objects)
    names = {e[0].text: i for i, e in enumerate(referring_expressions(scene))}
    for a, i in names.items():
        for b, j in names.items():
            for rel in ("to the left of", "to the right of", "above", "below"):
                if h == f"{a[0].upper()}{a[1:]} {rel} {b}." or h == f"{a[0].upper()}{a[1:]} is {rel} {b}.":
                    return spatial_relation(scene.objects[i], scene.objects[j]) == rel
    raise AssertionError(f"unparsed hypothesis {h!r}")


def test_deterministic(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_snli_ve(tmp_path / name, N, seed=seed)
    assert (tmp_path / "a" / "snli_ve_train.jsonl").read_bytes() == (tmp_path / "b" / "snli_ve_train.jsonl").read_bytes()
    assert (tmp_path / "a" / "snli_ve_train.jsonl").read_bytes() != (tmp_path / "c" / "snli_ve_train.jsonl").read_bytes()


def test_truthful_balanced_joined(tmp_path):
    generate_snli_ve(tmp_path / "v", N, seed=0, hypotheses_per_label=2)
    corpus_ids = [generate_image(i, N, 0)[0].image_id for i in range(N)]
    known, key = join_image_names(corpus_ids, corpus_ids)
    ex = [e for s in ("train", "dev", "test") for e in read_split(tmp_path / "v", s, known_images=known, join_key=key)]
    assert len(ex) == N * 6 and set(Counter(e.label for e in ex).values()) == {2 * N}
    for e in ex:
        scene = generate_image(int(e.image_id), N, 0)[0]
        if e.label == "entailment":
            assert _holds(e.hypothesis, scene), e.hypothesis
        elif e.label == "contradiction":
            assert not _holds(e.hypothesis, scene), e.hypothesis
        else:
            assert e.hypothesis in NEUTRAL_SCENE or re.search(r" (is made of \w+|was drawn before .+)\.$", e.hypothesis)
