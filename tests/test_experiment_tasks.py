"""The grid's downstream tasks beside REC (issue #12 item 7, issue #13 item 5): ``--tasks``, each task's
score in the table, and the power calculation (seeds and evaluation size to resolve a 2-point growth)."""
from __future__ import annotations

import csv
import math
import re

import pytest


def test_eval_variance_unit_by_hand():
    from trainer.experiment.stats import eval_variance_unit

    # V = 2 variants. big cell: none 0.5 → 0.25; variants 0.5, 0.9 → (0.25 + 0.09) / 4 = 0.085.
    # small cell: none 0.2 → 0.16; variants 0.5, 0.5 → 0.5 / 4 = 0.125. U = 0.25 + 0.085 + 0.16 + 0.125 = 0.62.
    assert eval_variance_unit((0.5, 0.2), ([0.5, 0.9], [0.5, 0.5])) == pytest.approx(0.62)


def test_seeds_needed_by_hand():
    from trainer.experiment.stats import seeds_needed

    # sd 5 pts at n = 1000, U = 1.0: eval variance 0.001, training variance 0.0025 - 0.001 = 0.0015.
    r = seeds_needed(0.05, 1000, 1.0, scales=(1, 4, 16))
    assert r["sd_eval"] == pytest.approx(math.sqrt(0.001)) and r["sd_train"] == pytest.approx(math.sqrt(0.0015))
    # k(n) = ceil(2² (0.0015 + 1/n) / 0.02²): n=1000 → 4·0.0025/0.0004 = 25; n=4000 → 4·0.00175/0.0004 = 17.5 → 18;
    # n=16000 → 4·0.0015625/0.0004 = 15.625 → 16; infinite evaluation → 4·0.0015/0.0004 = 15.
    assert [(b["n_eval"], b["seeds"]) for b in r["by_eval"]] == [(1000, 25), (4000, 18), (16000, 16)]
    assert r["floor"] == 15
    assert r["recommended"] == {"scale": 16, "n_eval": 16000, "seeds": 16}  # within max(1 seed, 10 %) of 15: ≤ 16
    # All of the variance is evaluation noise: the floor is the 2-seed minimum, and no tried size reaches it.
    r = seeds_needed(0.02, 1000, 0.5, scales=(1, 2))
    assert r["sd_train"] == 0.0 and r["floor"] == 2 and [b["seeds"] for b in r["by_eval"]] == [5, 3]
    assert r["recommended"]["scale"] == 2  # 3 ≤ 2 + 1
    # Growth s.d. below the evaluation noise alone (a lucky draw): training noise clips at 0, not negative.
    assert seeds_needed(0.001, 1000, 1.0)["sd_train"] == 0.0


def test_power_report_uses_the_verdicts_growth_sd():
    from trainer.experiment.config import ExperimentConfig
    from trainer.experiment.stats import power_report, verdict

    cfg = ExperimentConfig(variants=["none", "phrase"], pretrain_fractions=[1.0], finetune_fractions=[1.0, 0.125], seeds=[0, 1, 2])
    rows = []
    for s, g in zip(cfg.seeds, (0.00, 0.02, 0.04)):  # growth of phrase's gain at ft 1/8 per seed: 0, 2, 4 pts → sd 2 pts
        for ff, gain in ((1.0, 0.05), (0.125, 0.05 + g)):
            rows += [{"task": "vqa", "variant": "none", "pretrain_fraction": 1.0, "finetune_fraction": ff, "seed": s, "score": 0.5, "n_eval": 500},
                     {"task": "vqa", "variant": "phrase", "pretrain_fraction": 1.0, "finetune_fraction": ff, "seed": s, "score": 0.5 + gain, "n_eval": 500}]
    nums = verdict(rows, cfg, key="score")[1]
    assert nums["fine-tuning"]["growth"] == pytest.approx(0.02) and nums["fine-tuning"]["se"] == pytest.approx(0.02 / math.sqrt(3))
    p = power_report(rows, cfg, nums)
    a = p["axes"]["fine-tuning"]
    assert a["sd_growth"] == pytest.approx(0.02) and a["n_eval"] == 500
    # U: big cell 0.25 + 0.55·0.45 = 0.4975; small cell 0.25 + 0.57·0.43 = 0.4951 → eval variance 0.9926 / 500.
    assert a["sd_eval"] == pytest.approx(math.sqrt(0.9926 / 500))
    assert p["need"]["seeds"] == max(b["seeds"] for b in a["by_eval"] if b["scale"] == p["need"]["scale"])
    assert power_report(rows[:4], ExperimentConfig(variants=["none", "phrase"], pretrain_fractions=[1.0], finetune_fractions=[1.0, 0.125], seeds=[0]),
                        verdict(rows[:4], cfg, key="score")[1])["axes"] == {}  # one seed: no variance measured, nothing claimed


TASK_MISTAKES = [(["--tasks", "rec,gqa"], "unknown task 'gqa'"), (["--tasks", ""], "--tasks: empty"), (["--task-steps", "vqa=lots"], "--task-steps")]


@pytest.mark.parametrize("cli, argv, says", [("trainer.experiment.cli", *m) for m in TASK_MISTAKES]
                         + [("trainer.experiment.cli", ["--variants", "none,phrases"], "unknown variant 'phrases'")]
                         + [("trainer.experiment.compare", *m) for m in TASK_MISTAKES])
def test_bad_task_or_variant_is_one_line_and_exit_2(tmp_path, capsys, cli, argv, says):
    """The grid's and the comparison's command lines refuse the same mistakes the same way."""
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(cli).main(["--work", str(tmp_path / "w"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and err.startswith("error:")
    assert not (tmp_path / "w").exists()  # nothing built


def test_gpu_preset_sets_the_resolving_size_and_flags_override_it():
    from trainer.experiment.cli import GPU_PRESET, parse_args

    cpu = parse_args([])
    assert cpu.tasks == ["rec", "vqa"] and cpu.device == "auto" and cpu.seeds == [0, 1]
    gpu = parse_args(["--gpu"])
    assert gpu.device == "cuda" and gpu.seeds == GPU_PRESET["seeds"] and gpu.rec_images == GPU_PRESET["rec_images"]
    assert parse_args(["--preset", "gpu", "--seeds", "0,1,2"]).seeds == [0, 1, 2]
    assert parse_args(["--tasks", "snli_ve,rec", "--task-steps", "snli_ve=50"]).tasks == ["rec", "snli_ve"]  # registry order
    assert parse_args(["--task-steps", "snli_ve=50"]).steps_of("snli_ve") == 50


@pytest.mark.slow
def test_tiny_grid_with_two_tasks_puts_both_scores_in_the_table(tmp_path):
    from trainer.experiment.cli import main

    work = tmp_path / "exp"
    main(["--work", str(work), "--tasks", "vqa,rec", "--variants", "none,phrase", "--pretrain-fractions", "1", "--finetune-fractions", "1",
          "--seeds", "0", "--no-scratch", "--pretrain-images", "12", "--rec-images", "20", "--pretrain-steps", "2", "--pretrain-batch", "4",
          "--finetune-steps", "2", "--finetune-batch", "4", "--task-steps", "vqa=2", "--hidden-size", "32", "--num-layers", "1", "--jobs", "2"])
    with open(work / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["task"], r["variant"]) for r in rows) == [("rec", "none"), ("rec", "phrase"), ("vqa", "none"), ("vqa", "phrase")]
    assert all(0.0 <= float(r["score"]) <= 1.0 and int(r["n_eval"]) > 0 for r in rows)
    vqa = [r for r in rows if r["task"] == "vqa"]
    assert all(r["mean_acc"] == "" and r["vqa_yes_no_acc"] != "" for r in vqa)  # VQA's own columns, none of REC's
    md = (work / "results.md").read_text()
    assert "| variant | pre | ft | REC | VQA |" in md  # side by side, in the registry's order
    assert "*REC*:" in md and "*VQA*:" in md and "**Power**" in md  # a verdict per task (the power calculation: tested above)
    assert re.search(r"\| grounding, phrase level \(`phrase`\) \| full \| full \| \d+\.\d ± 0\.0 \| \d+\.\d ± 0\.0 \|", md)  # a score per task
    assert (work / "data" / "vqa" / "_MANIFEST.json").exists() and (work / "data" / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").exists()
    # Pre-training is shared: one run per (variant, seed), both tasks fine-tune from it.
    assert sorted(p.name for p in (work / "pretrain").iterdir() if p.is_dir()) == ["none_pfull_s0", "phrase_pfull_s0"]
    assert (work / "results.png").read_bytes()[:4] == b"\x89PNG"
