"""VQA fine-tuning on the shared engine: a tiny model beats the majority answer per answer type on
held-out questions, runs are deterministic, resume continues exactly, and bad input is one clear line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipelines.synthetic.vqa import generate_vqa
from task_fixtures import write_scene_fixture
from trainer.tasks.vqa.reader import ANSWER_TYPES

SEED = 3
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "location": "5d", "dropout": 0.0, "max_text_len": 16}


def write_vqa_fixture(root: Path, num_images: int, seed: int = SEED, feature_dim: int = 16) -> tuple[Path, Path, Path]:
    """Synthetic VQA 2.0 files over the synthetic corpus's scenes, and those scenes' region shard
    (the corpus's simulated detector, written as the regions stage writes samples)."""
    generate_vqa(root / "vqa", num_images, seed)
    regions, model = write_scene_fixture(root, num_images, seed, feature_dim, TINY)
    return root / "vqa", regions, model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_vqa_fixture(tmp_path_factory.mktemp("vqa_small"), 12)


def _cfg(vqa, regions, model, out, **over):
    from trainer.tasks.vqa.run import VQAConfig

    base = dict(vqa=str(vqa), regions=str(regions), out=str(out), model_config=str(model), steps=6, batch_size=8, lr=2e-3,
                head_dropout=0.1, min_answer_count=2, cpu_threads=1, progress=False)
    return VQAConfig(**{**base, **over})


def _edit(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_resume_continues_exactly(small, tmp_path, monkeypatch):
    """Killed after a checkpoint, then resumed: the same losses, weights and predictions as one uninterrupted run
    (dropout on, so torch's random state must come back too)."""
    from trainer.tasks.vqa import run
    from trainer.tasks.vqa.run import run_vqa

    whole = run_vqa(_cfg(*small, tmp_path / "whole", steps=10, ckpt_every=4))
    real, calls = run.vqa_loss, []

    def dies_at_step_7(model, batch):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed")
        return real(model, batch)

    monkeypatch.setattr(run, "vqa_loss", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run_vqa(_cfg(*small, tmp_path / "cut", steps=10, ckpt_every=4))
    assert json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())["step"] == 4
    monkeypatch.setattr(run, "vqa_loss", real)
    resumed = run_vqa(_cfg(*small, tmp_path / "cut", steps=10, ckpt_every=4, resume=True))
    assert resumed["losses"] == whole["losses"] and len(whole["losses"]) == 10
    assert resumed["accuracy"] == whole["accuracy"]
    assert (tmp_path / "cut" / "predictions.json").read_text() == (tmp_path / "whole" / "predictions.json").read_text()
    with pytest.raises(ValueError, match=r"other settings \(differ in \['lr'\]\)"):
        run_vqa(_cfg(*small, tmp_path / "cut", steps=10, ckpt_every=4, resume=True, lr=1e-3))


def _exit(argv, capsys) -> str:
    from trainer.tasks.vqa.run import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _copy(small, tmp_path) -> tuple[Path, Path, Path]:
    import shutil

    vqa, regions, model = small
    shutil.copytree(vqa, tmp_path / "vqa")
    return tmp_path / "vqa", regions, model


def _argv(vqa, regions, model, out, *extra) -> list[str]:
    return ["--vqa", str(vqa), "--regions", str(regions), "--out", str(out), "--model-config", str(model), "--steps", "2",
            "--min-answer-count", "2", "--cpu-threads", "1", "--no-progress", *extra]


def test_user_mistakes_are_one_line_exit_2(small, tmp_path, capsys):
    vqa, regions, model = small
    line = _exit(_argv(tmp_path / "nowhere", regions, model, tmp_path / "o"), capsys)
    assert "v2_OpenEnded_mscoco_train2014_questions.json: no such file" in line
    line = _exit(_argv(vqa, tmp_path, model, tmp_path / "o"), capsys)
    assert "no regions-NNNNNN.tar shards" in line and "make them with python -m pipelines.regions" in line
    line = _exit(_argv(vqa, regions, model, tmp_path / "o", "--image-id", "stem"), capsys)  # the corpus names images by number
    assert "keys tried by stem: e.g. ['COCO_train2014_000000000" in line and "region image_ids e.g. ['000000'" in line
    line = _exit(_argv(vqa, regions, tmp_path / "missing.json", tmp_path / "o"), capsys)
    assert "missing.json" in line
    line = _exit(_argv(vqa, regions, model, tmp_path / "o", "--vocab", str(tmp_path / "v.json")), capsys)
    assert "v.json" in line


def test_bad_records_name_the_question(small, tmp_path, capsys):
    vqa, regions, model = _copy(small, tmp_path)
    ann = vqa / "v2_mscoco_train2014_annotations.json"
    original = ann.read_text()
    _edit(ann, lambda d: d["annotations"][3]["answers"].pop())
    qid = json.loads(original)["annotations"][3]["question_id"]
    line = _exit(_argv(vqa, regions, model, tmp_path / "o"), capsys)
    assert f"question_id {qid}: annotation has 9 answers, VQA 2.0 has exactly 10" in line
    ann.write_text(original)
    questions = vqa / "v2_OpenEnded_mscoco_val2014_questions.json"
    q = json.loads(questions.read_text())["questions"][2]

    def unknown_image(d):
        d["questions"][2]["image_id"] = 999

    _edit(questions, unknown_image)
    _edit(vqa / "v2_mscoco_val2014_annotations.json", lambda d: [a.update(image_id=999) for a in d["annotations"] if a["question_id"] == q["question_id"]])
    line = _exit(_argv(vqa, regions, model, tmp_path / "o"), capsys)
    assert f"question_id {q['question_id']}: image_id 999 has no region sample (joined by int)" in line


def test_eval_answers_outside_the_vocabulary_are_named_and_score_zero(small, tmp_path, caplog):
    from trainer.tasks.vqa.run import run_vqa

    vqa, regions, model = _copy(small, tmp_path)
    ann = vqa / "v2_mscoco_val2014_annotations.json"
    qid = json.loads(ann.read_text())["annotations"][1]["question_id"]

    def zebra(d):
        a = d["annotations"][1]
        a["multiple_choice_answer"] = "zebra"
        for x in a["answers"]:
            x["answer"] = "zebra"

    _edit(ann, zebra)
    with caplog.at_level(logging.WARNING, logger="trainer.finetune_vqa"):
        res = run_vqa(_cfg(vqa, regions, model, tmp_path / "o", steps=2))
    assert str(qid) in caplog.text and "no ground-truth answer in the" in caplog.text
    assert qid in res["eval_uncovered"]["question_ids"] and res["eval_uncovered"]["vocab_upper_bound"] < 100.0
    preds = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert len(preds) == res["eval_questions"] and {"question_id", "answer"} == set(preds[0])  # the official results format
    assert "zebra" not in json.loads((tmp_path / "o" / "vocab.json").read_text())["answers"]


def test_same_seed_same_predictions_and_metrics(small, tmp_path):
    from trainer.tasks.vqa.run import run_vqa

    a = run_vqa(_cfg(*small, tmp_path / "a", steps=8))
    b = run_vqa(_cfg(*small, tmp_path / "b", steps=8))
    assert a["losses"] == b["losses"] and a["accuracy"] == b["accuracy"] and a["baselines"] == b["baselines"]
    assert (tmp_path / "a" / "predictions.json").read_text() == (tmp_path / "b" / "predictions.json").read_text()
    c = run_vqa(_cfg(*small, tmp_path / "c", steps=8, seed=1))
    assert c["losses"] != a["losses"]


@pytest.mark.slow
def test_tiny_finetune_beats_the_majority_answer_per_answer_type(tmp_path):
    """The trainer/README.md "VQA" measurement: 400 synthetic images (1,600 train / 400 val questions),
    a 2-layer 64-wide model from scratch, 1,500 steps at lr 1e-3. Held-out val2014, official metric."""
    from trainer.tasks.vqa.run import run_vqa

    vqa, regions, _ = write_vqa_fixture(tmp_path, 400)
    model = tmp_path / "model64.json"
    model.write_text(json.dumps({**TINY, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}))
    res = run_vqa(_cfg(vqa, regions, model, tmp_path / "o", steps=1500, batch_size=32, lr=1e-3, head_dropout=0.0, min_answer_count=3))
    acc, base = res["accuracy"]["per_answer_type"], res["baselines"]["majority_by_answer_type"]["per_answer_type"]
    assert set(acc) == set(ANSWER_TYPES)
    for t in ANSWER_TYPES:
        assert acc[t] > base[t], f"{t}: {acc[t]:.1f} is not above the majority answer's {base[t]:.1f}"
