"""The grid's data is reused only when the settings that made it are unchanged (issue #12, item 8).

The pipeline and trainer CLIs are replaced by a spy that records each launch and writes the files the
grid reads back (corpus manifest and captions, region and label shards with their manifests, a
finished pre-training, fine-tuning results); the real CLIs run end to end in
``tests/test_rec.py::test_experiment_micro_grid``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.experiment import corpus as corpus_mod
from trainer.experiment import jobs as jobs_mod
from trainer.experiment.config import EVAL_SPLITS, ExperimentConfig
from trainer.experiment.corpus import label_quality
from trainer.experiment.jobs import run_grid

QUALITY = {"oracle": 1.0, "simulated": 0.625}  # the spy's label precision per teacher


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def _publish(root: Path, stage: str, fp: str, manifest: dict | None = None) -> Path:
    d = root / stage / fp
    d.mkdir(parents=True)
    (d / f"{stage}-000000.tar").write_bytes(b"")
    if manifest is not None:
        (d / "_MANIFEST.json").write_text(json.dumps(manifest))
    (root / stage / "CURRENT").write_text(fp + "\n")
    return d


def fake_cli(cmd: list[str], log_file: Path) -> None:
    """Stands for ``run_logged``: writes what each CLI would publish, from its own arguments."""
    module, out = cmd[2], Path(_arg(cmd, "--out"))
    if module == "pipelines.synthetic":
        n = int(_arg(cmd, "--num-images"))
        out.mkdir(parents=True)
        (out / "captions.tsv").write_text("".join(f"a shape {k}\timages/{i:06d}.png\n" for i in range(n) for k in range(2)))
        (out / "_MANIFEST.json").write_text(json.dumps({"num_images": n, "seed": int(_arg(cmd, "--seed"))}))
    elif module == "pipelines.regions":
        _publish(out, "regions", "r0")
    elif module == "pipelines.label_pipeline":
        teacher = _arg(cmd, "--teacher")
        params = dict(a.split("=", 1) for a in cmd[1:] if "=" in a and not a.startswith("--"))
        params["flickr30k"] = _arg(cmd, "--flickr30k")
        images = len({line.split("\t")[1] for line in Path(_arg(cmd, "--captions")).read_text().splitlines()})
        p = QUALITY[teacher]
        _publish(out, "labels", f"l-{teacher}", {"teacher": {"name": teacher, "params": params, "fingerprint": f"t-{teacher}"},
                                                 "quality": {teacher: {"precision": p, "recall": p, "f1": p}},
                                                 "stats": {"images": 8, "images_without_captions": 8 - images, "phrases": 2 * images, "positive_pairs": 3 * images}})
    elif module == "trainer.train":
        (out / "latest.json").write_text(json.dumps({"step": int(_arg(cmd, "--steps"))}))
    elif module == "pipelines.synthetic.vqa":
        out.mkdir(parents=True)
        (out / "_MANIFEST.json").write_text(json.dumps({"kind": "vqa", "corpus": _arg(cmd, "--corpus")}))
    elif module == "trainer.finetune_vqa":
        (out / "results.json").write_text(json.dumps({"accuracy": {"overall": 40.0, "per_answer_type": {"yes/no": 60.0}, "n": 10}}))
    elif module == "trainer.finetune_rec":
        split = {"acc": 0.5, "acc_strict": 0.5, "oracle": 0.9, "by_need": {}, "acc_swapped_text": 0.2}
        (out / "results.json").write_text(json.dumps({"train_expressions": 10, "train_acc": 0.6, "splits": {s: split for s in EVAL_SPLITS}}))
    else:
        raise AssertionError(f"unexpected command {cmd}")


@pytest.fixture
def launches(monkeypatch):
    """Every CLI the grid launches, as ``(module, --out directory name)``."""
    calls: list[tuple[str, str]] = []

    def spy(cmd: list[str], log_file: Path) -> None:
        calls.append((cmd[2], Path(_arg(cmd, "--out")).name))
        fake_cli(cmd, log_file)

    monkeypatch.setattr(corpus_mod, "run_logged", spy)  # data: make_corpus / make_regions / make_labels
    monkeypatch.setattr(jobs_mod, "run_logged", spy)  # runs: the job runner
    return calls


def grid(work: Path, **kw) -> ExperimentConfig:
    base = dict(work=str(work), tasks=["rec"], variants=["none", "phrase"], pretrain_fractions=[1.0, 0.5], finetune_fractions=[1.0], seeds=[0],
                scratch=False, pretrain_images=8, rec_images=8, pretrain_steps=2, finetune_steps=2, jobs=1)
    return ExperimentConfig(**{**base, **kw})


def _modules(calls: list[tuple[str, str]]) -> list[str]:
    return sorted(m for m, _ in calls)


def test_unchanged_settings_reuse_everything(tmp_path, launches):
    run_grid(grid(tmp_path / "w"))
    assert _modules(launches).count("pipelines.synthetic") == 2 and _modules(launches).count("pipelines.label_pipeline") == 2
    first = (tmp_path / "w" / "results.md").read_text()
    launches.clear()
    run_grid(grid(tmp_path / "w", jobs=2))  # parallelism is not a setting of the data nor of the runs
    assert launches == []
    assert (tmp_path / "w" / "results.md").read_text().split("Accuracy (%)")[1:] == first.split("Accuracy (%)")[1:]


def test_changed_teacher_rebuilds_the_labels_and_the_report_names_their_teacher(tmp_path, launches):
    work = tmp_path / "w"
    run_grid(grid(work))
    md = (work / "results.md").read_text()
    assert "`simulated false_rate=0.3 miss_rate=0.2`" in md and "| 0.625 |" in md
    launches.clear()
    run_grid(grid(work, teacher="oracle", teacher_args=[]))
    # Only the labels (both fractions) and the runs made from them; corpora and regions are kept.
    assert sorted(launches) == sorted([("pipelines.label_pipeline", "labels_full"), ("pipelines.label_pipeline", "labels_1_2"),
                                       *[("trainer.train", f"{v}_p{f}_s0") for v in ("none", "phrase") for f in ("full", "1_2")],
                                       *[("trainer.finetune_rec", f"{v}_p{f}_ffull_s0") for v in ("none", "phrase") for f in ("full", "1_2")]])
    labels = work / "data" / "labels_full"
    assert [p.name for p in (labels / "labels").iterdir() if p.is_dir()] == ["l-oracle"]  # the old labels are gone, not mixed in
    md = (work / "results.md").read_text()
    assert "simulated" not in md and "| 1/2 | `oracle` |" in md and "| 1.000 |" in md and "0.625" not in md
    quality = json.loads((work / "experiment.json").read_text())["label_quality"]
    assert {q["teacher"] for q in quality.values()} == {"oracle"} and {q["precision"] for q in quality.values()} == {1.0}
    launches.clear()
    run_grid(grid(work, teacher="oracle", teacher_args=["seed=3"]))  # a teacher argument is a setting too
    assert _modules(launches).count("pipelines.label_pipeline") == 2


@pytest.mark.parametrize("change, rebuilt", [
    ({"pretrain_images": 16}, {"pretrain_corpus"}),
    ({"rec_images": 16}, {"rec_corpus"}),
    ({"corpus_seed": 1}, {"pretrain_corpus", "rec_corpus"}),
    ({"feature_dim": 32}, {"pretrain_corpus", "rec_corpus"}),
])
def test_changed_image_count_seed_or_width_rebuilds_the_corpus(tmp_path, launches, change, rebuilt):
    work = tmp_path / "w"
    run_grid(grid(work))
    launches.clear()
    run_grid(grid(work, **change))
    assert {out for m, out in launches if m == "pipelines.synthetic"} == rebuilt
    regions = {out for m, out in launches if m == "pipelines.regions"}
    assert regions == {c.replace("corpus", "regions") for c in rebuilt}  # what was made from a rebuilt corpus is rebuilt too
    assert _modules(launches).count("pipelines.label_pipeline") == (2 if "pretrain_corpus" in rebuilt else 0)
    # Every run reads a rebuilt corpus (pre-training its labels, fine-tuning its REFER data, or both): all are redone.
    assert _modules(launches).count("trainer.finetune_rec") == 4
    assert _modules(launches).count("trainer.train") == (4 if "pretrain_corpus" in rebuilt else 0)
    if "pretrain_images" in change:
        assert json.loads((work / "data" / "pretrain_corpus" / "_MANIFEST.json").read_text())["num_images"] == 16


def test_task_data_is_made_once_from_the_downstream_corpus_and_rebuilt_with_it(tmp_path, launches):
    """VQA's data is generated over the downstream corpus (the same scenes as REC), reused, and rebuilt when the
    corpus changes, with its runs; pre-training is shared by the tasks (run once)."""
    work = tmp_path / "w"
    run_grid(grid(work, tasks=["rec", "vqa"]))
    assert ("pipelines.synthetic.vqa", "vqa") in launches
    assert _modules(launches).count("trainer.train") == 4  # not once per task
    assert _modules(launches).count("trainer.finetune_vqa") == _modules(launches).count("trainer.finetune_rec") == 4
    md = (work / "results.md").read_text()
    assert "| REC | VQA |" in md and "40.0 ± 0.0" in md
    launches.clear()
    run_grid(grid(work, tasks=["rec", "vqa"]))
    assert launches == []
    run_grid(grid(work, tasks=["rec", "vqa"], rec_images=16))
    assert ("pipelines.synthetic.vqa", "vqa") in launches and _modules(launches).count("trainer.finetune_vqa") == 4
    assert _modules(launches).count("trainer.train") == 0


def test_data_without_a_spec_or_left_unfinished_is_rebuilt(tmp_path, launches):
    """A work directory from before specs (or a killed build) names no settings: it is rebuilt, not trusted."""
    work = tmp_path / "w"
    run_grid(grid(work))
    (work / "data" / "labels_full.spec.json").unlink()
    launches.clear()
    run_grid(grid(work))
    assert [m for m, _ in launches if m.startswith("pipelines.")] == ["pipelines.label_pipeline"]


def test_label_quality_names_the_teacher_of_the_manifest(tmp_path):
    d = _publish(tmp_path, "labels", "x", {"teacher": {"name": "simulated", "params": {"miss_rate": "0.6", "flickr30k": "/c/flickr30k",
                                                                                     "model_dir": "/m/owl"}},
                                           "quality": {"simulated": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3}},
                                           "stats": {"images": 4, "images_without_captions": 1, "phrases": 6, "positive_pairs": 9}})
    q = label_quality(d)
    assert q["teacher"] == "simulated miss_rate=0.6 model_dir=owl" and q["precision"] == 0.5 and q["images_labelled"] == 3
    (d / "_MANIFEST.json").write_text(json.dumps({"stats": {}, "quality": None}))
    assert label_quality(d)["teacher"].startswith("unknown") and label_quality(d)["precision"] is None
