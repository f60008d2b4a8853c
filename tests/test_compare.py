"""The methods comparison (trainer.experiment.compare): its pre-training commands are valid trainer
commands at matched settings, μ-VLA's sentences are the corpus's captions with the pairing removed,
the summary applies the grid's paired-gain statistics per task, and ``--tasks`` (issue #14 item 5)
puts every task's score, gain and verdict in the table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainer.config import parse_args as train_args
from trainer.experiment.compare import METHODS, CompareConfig, parse_args, pretrain_cmd, summarise, unpaired_sentences


def test_pretrain_commands_are_valid_and_matched(tmp_path):
    cfg = CompareConfig(pretrain_steps=300, mu_switch=(1 / 3, 2 / 3))
    parsed = {m: train_args(pretrain_cmd(cfg, m, Path("R"), Path("L"), Path("Q"), tmp_path / m, 1, 1)[3:]) for m in METHODS}
    assert {m: c.method for m, c in parsed.items()} == {m: m for m in METHODS}
    same = ("steps", "batch_size", "lr", "seed", "hidden_size", "num_layers", "model", "regions")
    assert len({tuple(getattr(c, k) for k in same) for c in parsed.values()}) == 1  # matched steps, data and encoder
    mu = parsed["mu_vla"]
    assert mu.retrieval == "Q" and (mu.mu_region_phrase_at, mu.mu_image_sentence_at) == (100, 200)
    assert parsed["partial_ot"].pot_mass == cfg.pot_mass


def test_unpaired_sentences_are_the_captions_shuffled(tmp_path):
    tsv = tmp_path / "captions.tsv"
    caps = [f"caption {i}" for i in range(20)]
    tsv.write_text("".join(f"{c}\timages/{i:06d}.png\n" for i, c in enumerate(caps)))
    out = unpaired_sentences(tsv, tmp_path / "s.txt", seed=0).read_text().splitlines()
    assert sorted(out) == sorted(caps) and out != caps
    assert unpaired_sentences(tsv, tmp_path / "t.txt", seed=0).read_text().splitlines() == out  # seeded


def test_summary_uses_paired_gains_and_the_two_se_rule():
    def row(task, m, seed, score):
        r = {"task": task, "variant": m, "seed": seed, "pretrain_fraction": 1.0, "finetune_fraction": 1.0, "score": score, "n_eval": 90}
        return {**r, "mean_acc_swapped_text": 0.1} if task == "rec" else r

    rows = [row("rec", "none", 0, 0.30), row("rec", "none", 1, 0.40), row("rec", "none", 2, 0.50),
            row("rec", "ssga", 0, 0.36), row("rec", "ssga", 1, 0.45), row("rec", "ssga", 2, 0.57),  # +6, +5, +7
            row("rec", "partial_ot", 0, 0.40), row("rec", "partial_ot", 1, 0.30), row("rec", "partial_ot", 2, 0.50)]  # +10, -10, 0
    # VQA: the same methods, other scores; ssga loses 4, 5, 6 points there (paired with VQA's none, not REC's)
    rows += [row("vqa", "none", 0, 0.60), row("vqa", "none", 1, 0.70), row("vqa", "none", 2, 0.65),
             row("vqa", "ssga", 0, 0.56), row("vqa", "ssga", 1, 0.65), row("vqa", "ssga", 2, 0.59),
             row("vqa", "partial_ot", 0, 0.60), row("vqa", "partial_ot", 1, 0.70), row("vqa", "partial_ot", 2, 0.65)]
    s = summarise(rows, ["none", "ssga", "partial_ot"], ["rec", "vqa"])
    r, v = s["rec"], s["vqa"]
    assert r["none"]["score"] == pytest.approx(0.40) and r["none"]["score_se"] == pytest.approx(0.1 / 3 ** 0.5)
    assert r["ssga"]["gain"] == pytest.approx(0.06) and r["ssga"]["gain_se"] == pytest.approx(0.01 / 3 ** 0.5) and r["ssga"]["verdict"] == "BETTER"
    assert r["partial_ot"]["verdict"] == "NOT SHOWN" and "gain" not in r["none"] and r["none"]["swapped"] == pytest.approx(0.1)
    assert v["ssga"]["gain"] == pytest.approx(-0.05) and v["ssga"]["gain_se"] == pytest.approx(0.01 / 3 ** 0.5) and v["ssga"]["verdict"] == "WORSE"
    assert v["partial_ot"]["gain"] == pytest.approx(0.0) and "swapped" not in v["none"] and v["none"]["n_eval"] == 90


def test_cli_rejects_a_bad_curriculum_and_unknown_methods(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mu-switch", "0.8,0.2"])
    assert "--mu-switch" in capsys.readouterr().err
    from trainer.experiment.compare import run_compare

    with pytest.raises(ValueError, match="unknown method"):
        run_compare(CompareConfig(work=str(tmp_path), methods=["none", "uniter"]))


def test_tasks_default_as_the_grids():
    assert parse_args([]).tasks == ["rec", "vqa"]
    cfg = parse_args(["--tasks", "vqa,rec", "--task-steps", "vqa=7"])
    assert cfg.tasks == ["rec", "vqa"] and cfg.grid().steps_of("vqa") == 7  # registry order; the grid's steps rule


@pytest.mark.slow
def test_tiny_comparison_on_rec_and_vqa_shows_both_columns(tmp_path):
    from trainer.experiment.compare import main

    work = tmp_path / "cmp"
    main(["--work", str(work), "--tasks", "rec,vqa", "--methods", "none,ssga", "--seeds", "0", "--pretrain-images", "12", "--rec-images", "20",
          "--pretrain-steps", "2", "--pretrain-batch", "4", "--finetune-steps", "2", "--finetune-batch", "4", "--task-steps", "vqa=2",
          "--hidden-size", "32", "--num-layers", "1", "--jobs", "2"])
    md = (work / "compare.md").read_text()
    assert "| method | REC score | REC gain (pts) | REC verdict | VQA score | VQA gain (pts) | VQA verdict | REC swapped text | train s/step |" in md
    cell = r"\d+\.\d ± –"  # one seed (to keep the test short): no s.e., and the verdict says so
    gain = r"[+-]\d+\.\d ± –"
    verdict = r"INCONCLUSIVE \(fewer than two seeds\)"
    assert re.search(rf"\| no alignment loss \(`none`\) \| {cell} \| – \| – \| {cell} \| – \| – \| ", md)
    assert re.search(rf"\(`ssga`\) \| {cell} \| {gain} \| {verdict} \| {cell} \| {gain} \| {verdict} \| \d+\.\d \| \d", md)
    assert "retrieval stage not run" in md
    # REC's runs keep the REC-only comparison's directories; VQA's are beside them; one pre-training run per method and seed feeds both
    assert sorted(p.name for p in (work / "finetune").iterdir()) == ["none_s0", "ssga_s0", "vqa"]
    assert all((work / "finetune" / "vqa" / f"{m}_s{s}" / "results.json").exists() for m in ("none", "ssga") for s in (0,))
    assert sorted(p.name for p in (work / "pretrain").iterdir()) == ["none_s0", "ssga_s0"]
