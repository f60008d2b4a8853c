"""Synthetic VCR: deterministic by seed, balanced labels, answers and rationales true to the scene,
readable by the VCR reader (metadata boxes included), CLI errors as one line."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from pipelines.synthetic.corpus import generate_image
from pipelines.synthetic.scene import spatial_relation
from pipelines.synthetic.vcr import generate_vcr
from trainer.tasks.vcr import read_metadata, read_split

N = 24


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path):
    generate_vcr(tmp_path / "a", N, seed=3)
    generate_vcr(tmp_path / "b", N, seed=3)
    generate_vcr(tmp_path / "c", N, seed=4)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a")["train.jsonl"] != _files(tmp_path / "c")["train.jsonl"]


def test_truthful_balanced_and_readable(tmp_path):
    generate_vcr(tmp_path / "v", N, seed=0)
    ex = read_split(tmp_path / "v", "train") + read_split(tmp_path / "v", "val")
    assert len(ex) == 3 * N
    for labels in (Counter(e.answer_label for e in ex), Counter(e.rationale_label for e in ex)):
        assert set(labels) == {0, 1, 2, 3} and max(labels.values()) <= 2.2 * len(ex) / 4
    for e in ex:
        scene = generate_image(int(e.image_stem), N, 0)[0]
        assert list(e.objects) == [o.shape for o in scene.objects]
        m = read_metadata(tmp_path / "v" / "vcr1images" / e.metadata_fn, len(e.objects))
        for o, box in zip(scene.objects, m.boxes):
            assert box.tolist() == o.box.tolist()
        ans, rat = e.answer_choices[e.answer_label], e.rationale_choices[e.rationale_label]
        assert len(set(e.answer_choices)) == 4 and len(set(e.rationale_choices)) == 4
        if e.question[:3] == ("What", "color", "is"):
            o = scene.objects[e.question[3][0]]
            assert ans[2] == o.colour and rat[3:5] == (o.colour, o.shape)
            assert all(c[2] != o.colour for k, c in enumerate(e.answer_choices) if k != e.answer_label)
        elif e.question[0] == "Where":
            (i,), (j,) = e.question[2], e.question[5]
            assert " ".join(w for w in ans if isinstance(w, str))[6:-2] == spatial_relation(scene.objects[i], scene.objects[j])
        else:
            shape = e.question[2][:-1]
            members = tuple(k for k, o in enumerate(scene.objects) if o.shape == shape)
            assert ans[2] == str(len(members)) and rat[0] == members
            assert all(c[0] != members for k, c in enumerate(e.rationale_choices) if k != e.rationale_label)


def test_cli(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipelines.synthetic.vcr", *a], capture_output=True, text=True)  # noqa: E731
    ok = run("--out", str(tmp_path / "v"), "--num-images", "4", "--seed", "1")
    assert ok.returncode == 0 and json.loads((tmp_path / "v" / "_MANIFEST.json").read_text())["kind"] == "ssga-synthetic-vcr"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    bad = run("--out", str(tmp_path / "other"), "--num-images", "4")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "refusing to replace" in bad.stderr and "Traceback" not in bad.stderr
    none = run("--out", str(tmp_path / "w"))
    assert none.returncode == 2 and "give --num-images" in none.stderr
