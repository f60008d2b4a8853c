"""Synthetic VQA generator: published layout, determinism, answer-type balance, truthful answers, join."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from pipelines.synthetic.corpus import generate, generate_image, image_id_of
from pipelines.synthetic.vqa import MANIFEST, generate_vqa, main, question_type_of
from trainer.tasks.vqa.join import join_regions
from trainer.tasks.vqa.metric import evaluate
from trainer.tasks.vqa.reader import read_split
from trainer.tasks.vqa.vocab import build_answer_vocab, soft_target
from trainer.tasks.vqa.answers import question_accuracy

N, SEED = 60, 5


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa") / "vqa"
    generate_vqa(out, N, SEED)
    return out


def _examples(d):
    return read_split(d, "train2014") + read_split(d, "val2014")


def test_layout_and_reader(vqa_dir):
    names = sorted(p.name for p in vqa_dir.iterdir())
    assert names == [MANIFEST, "v2_OpenEnded_mscoco_train2014_questions.json", "v2_OpenEnded_mscoco_val2014_questions.json",
                     "v2_mscoco_train2014_annotations.json", "v2_mscoco_val2014_annotations.json"]  # fmt: skip
    q = json.loads((vqa_dir / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    assert set(q) == {"info", "task_type", "data_type", "data_subtype", "license", "questions"} and q["data_subtype"] == "val2014"
    examples = _examples(vqa_dir)  # the reader validates every record (10 answers, fields, join by question_id)
    assert len(examples) == N * 5
    assert {e.image_id for e in examples} == set(range(N))  # COCO id = int("000017") = index
    assert all(e.question_id // 1000 == e.image_id for e in examples)
    train, val = read_split(vqa_dir, "train2014"), read_split(vqa_dir, "val2014")
    assert not {e.image_id for e in train} & {e.image_id for e in val} and val  # images split, not questions


def test_deterministic_by_seed_and_per_image(vqa_dir, tmp_path):
    again = generate_vqa(tmp_path / "again", N, SEED)
    first = json.loads((vqa_dir / MANIFEST).read_text())
    assert again["files"] == first["files"]  # byte-identical files
    other = generate_vqa(tmp_path / "other", N, SEED + 1)
    assert other["files"] != first["files"]
    # image i depends on (seed, i) only: a smaller run is a prefix
    small = generate_vqa(tmp_path / "small", 20, SEED)
    by_q = {e.question_id: e for e in _examples(vqa_dir)}
    for e in _examples(tmp_path / "small"):
        assert by_q[e.question_id] == e
    assert small["num_images"] == 20


def test_answer_type_balance_and_disagreement(vqa_dir):
    examples = _examples(vqa_dir)
    share = Counter(e.answer_type for e in examples)
    assert set(share) == {"yes/no", "number", "other"}
    for t in share:
        assert 0.15 <= share[t] / len(examples) <= 0.5, share
    yes = sum(e.multiple_choice_answer == "yes" for e in examples if e.answer_type == "yes/no")
    assert 0.35 <= yes / share["yes/no"] <= 0.65
    disagree = sum(len(set(e.answers)) > 1 for e in examples) / len(examples)
    assert 0.2 <= disagree <= 0.9  # some unanimous, many not
    assert any(set(e.answers) & {"violet", "disc", "round", "rhombus", "rectangle", "gold", "dark green", "dark orange"} for e in examples)
    kinds = Counter(e.question_type for e in examples)
    assert {"how many", "is there a", "is the", "what color is the"} <= set(kinds)


def test_answers_are_true_to_the_scene(vqa_dir):
    # Count and existence questions re-checked against the corpus's scenes, independently of the generator.
    right = total = 0
    scenes = {}
    for e in _examples(vqa_dir):
        if e.image_id not in scenes:
            scenes[e.image_id] = generate_image(e.image_id, N, SEED)[0]
        scene = scenes[e.image_id]
        m = re.fullmatch(r"How many (\w+)s are there\?", e.question)
        m2 = re.fullmatch(r"How many (\w+) shapes are there\?", e.question)
        m3 = re.fullmatch(r"Is there an? (\w+) (\w+)\?", e.question)
        if m2:
            truth = str(sum(o.colour == m2.group(1) for o in scene.objects))
        elif m:
            truth = str(sum(o.shape == m.group(1) for o in scene.objects))
        elif m3:
            truth = "yes" if any((o.colour, o.shape) == m3.groups() for o in scene.objects) else "no"
        else:
            continue
        total += 1
        right += e.multiple_choice_answer == truth
    assert total > 50 and right / total >= 0.95


def test_vocab_and_soft_targets_on_synthetic(vqa_dir):
    train, val = read_split(vqa_dir, "train2014"), read_split(vqa_dir, "val2014")
    vocab = build_answer_vocab(train, min_count=3)
    assert {"yes", "no", "1", "2"} <= set(vocab.answers)
    for e in val:
        idx, scores = soft_target(e.answers, vocab)
        dense = dict(zip(idx, scores))
        assert all(dense.get(i, 0.0) == question_accuracy(a, e.answers) for i, a in enumerate(vocab.answers))
    # the majority answer of each question (what an oracle predicts) scores >= 0.9 on average
    assert evaluate({e.question_id: e.multiple_choice_answer for e in val}, val).overall >= 90.0


def test_joins_corpus_region_ids(vqa_dir):
    ids = {e.image_id for e in _examples(vqa_dir)}
    joined, key = join_regions(ids, [image_id_of(i, N) for i in range(N)], "auto", data_subtype="val2014")
    assert key == "int" and joined[17] == "000017" and len(joined) == N


def test_question_types():
    assert question_type_of("What color is the square?") == "what color is the"
    assert question_type_of("Is there an orange star?") == "is there"
    assert question_type_of("Is there a red star?") == "is there a"
    assert question_type_of("How many people are in the room?") == "how many people are in"
    assert question_type_of("What shape is the red object?") == "what"
    assert question_type_of("Zebra crossing?") == "none of the above"


def test_cli(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    generate(corpus, 4, seed=2, feature_dim=8, captions_per_image=1)
    main(["--out", str(tmp_path / "v"), "--corpus", str(corpus)])
    m = json.loads((tmp_path / "v" / MANIFEST).read_text())
    assert (m["num_images"], m["seed"]) == (4, 2)
    with pytest.raises(SystemExit) as err:
        main(["--out", str(tmp_path / "v"), "--corpus", str(corpus), "--seed", "3"])
    assert err.value.code == 2 and "differ from the corpus's" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["--out", str(corpus), "--num-images", "2"])  # the corpus is not a VQA directory: never replaced
    assert err.value.code == 2 and "refusing to replace it" in capsys.readouterr().err
    assert (corpus / "captions.tsv").exists()
