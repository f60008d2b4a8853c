"""The methods comparison (trainer.experiment.compare): its pre-training commands are valid trainer
commands at matched settings, μ-VLA's sentences are the corpus's captions with the pairing removed,
and the summary applies the grid's paired-gain statistics."""
from __future__ import annotations

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
    def row(m, seed, acc):
        return {"variant": m, "seed": seed, "pretrain_fraction": 1.0, "finetune_fraction": 1.0, "mean_acc": acc, "mean_acc_swapped_text": 0.1}

    rows = [row("none", 0, 0.30), row("none", 1, 0.40), row("none", 2, 0.50),
            row("ssga", 0, 0.36), row("ssga", 1, 0.45), row("ssga", 2, 0.57),  # +6, +5, +7
            row("partial_ot", 0, 0.40), row("partial_ot", 1, 0.30), row("partial_ot", 2, 0.50)]  # +10, -10, 0
    s = summarise(rows, ["none", "ssga", "partial_ot"])
    assert s["none"]["acc"] == pytest.approx(0.40) and s["none"]["acc_se"] == pytest.approx(0.1 / 3 ** 0.5)
    assert s["ssga"]["gain"] == pytest.approx(0.06) and s["ssga"]["gain_se"] == pytest.approx(0.01 / 3 ** 0.5) and s["ssga"]["verdict"] == "BETTER"
    assert s["partial_ot"]["verdict"] == "NOT SHOWN" and "gain" not in s["none"]


def test_cli_rejects_a_bad_curriculum_and_unknown_methods(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mu-switch", "0.8,0.2"])
    assert "--mu-switch" in capsys.readouterr().err
    from trainer.experiment.compare import run_compare

    with pytest.raises(ValueError, match="unknown method"):
        run_compare(CompareConfig(work=str(tmp_path), methods=["none", "uniter"]))
