"""Synthetic NLVR2: deterministic by seed, balanced labels, each label the statement's truth on its pair
(re-checked here by an independent reading of the sentence), images joined via the id map."""
from __future__ import annotations

import re
from pathlib import Path

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.nlvr2 import WORDS, generate_nlvr2
from schemas.image_ids import parse_id_map
from trainer.tasks.nlvr2 import evaluate, image_names, read_split
from trainer.tasks.vcr.join import join_image_names

N = 40


def _truth(sentence, left, right):
    n = lambda sc, shape, colour=None: sum(o.shape == shape and (colour is None or o.colour == colour) for o in sc.objects)  # noqa: E731
    if m := re.fullmatch(r"The (left|right) image contains exactly (\w+) (\w+?)s?\.", sentence):
        return n(left if m[1] == "left" else right, m[3]) == WORDS.index(m[2])
    if m := re.fullmatch(r"The (left|right) image contains a (\w+) (\w+)\.", sentence):
        return n(left if m[1] == "left" else right, m[3], m[2]) > 0
    if m := re.fullmatch(r"One image contains a (\w+) and the other image does not\.", sentence):
        return (n(left, m[1]) > 0) != (n(right, m[1]) > 0)
    if m := re.fullmatch(r"Both images contain at least one (\w+)\.", sentence):
        return n(left, m[1]) > 0 and n(right, m[1]) > 0
    if m := re.fullmatch(r"The left image contains more (\w+)s than the right image\.", sentence):
        return n(left, m[1]) > n(right, m[1])
    m = re.fullmatch(r"There are (\d+) shapes in the two images together\.", sentence)
    return len(left.objects) + len(right.objects) == int(m[1])


def test_deterministic(tmp_path):
    generate_nlvr2(tmp_path / "a", N, seed=2)
    generate_nlvr2(tmp_path / "b", N, seed=2)
    generate_nlvr2(tmp_path / "c", N, seed=5)
    for name in ("train.json", "dev.json", "images.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.json").read_bytes() != (tmp_path / "c" / "train.json").read_bytes()


def test_truthful_balanced_joined(tmp_path):
    d = tmp_path / "n"
    generate_nlvr2(d, N, seed=0)
    id_map = parse_id_map((d / "images.tsv").read_text(), "images.tsv")
    ex = read_split(d, "train") + read_split(d, "dev")
    assert len(ex) == (N // 2) * 4  # every pair gets every sentence of its set
    share = sum(e.label for e in ex) / len(ex)
    assert 0.4 <= share <= 0.6
    for e in ex:
        left, right = (generate_image(int(id_map[img]), N, 0)[0] for img in e.images)
        assert e.label == _truth(e.sentence, left, right), e.identifier
    corpus_ids = [generate_image(i, N, 0)[0].image_id for i in range(N)]
    known, key = join_image_names(image_names(ex), corpus_ids, "map", id_map=id_map)
    assert key == "map" and len(known) == N
    read_split(d, "train", known_images=known, join_key=key)
    s = evaluate({e.identifier: e.label for e in ex}, ex)
    assert s.accuracy == 100.0 and s.consistency == 100.0 and s.groups == (N // 4) * 4


def test_cli_error(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pipelines.synthetic.nlvr2", "--out", str(tmp_path / "x"), "--num-images", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "need --num-images >= 2" in r.stderr and "Traceback" not in r.stderr
    assert not Path(tmp_path / "x").exists()
