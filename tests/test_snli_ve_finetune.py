"""SNLI-VE fine-tuning on the shared engine: a tiny model beats the majority class on the held-out
synthetic dev split, runs are deterministic, and bad input is one clear line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.synthetic.snli_ve import generate_snli_ve
from task_fixtures import write_scene_fixture
from trainer.tasks.snli_ve.reader import LABELS

SEED = 3
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "location": "5d", "dropout": 0.0, "max_text_len": 24}


def write_snli_ve_fixture(root: Path, num_images: int, per_label: int, seed: int = SEED, feature_dim: int = 16) -> tuple[Path, Path, Path]:
    """Synthetic SNLI-VE over the corpus's scenes and those scenes' region shard (the corpus's simulated detector)."""
    generate_snli_ve(root / "ve", num_images, seed, per_label)
    regions, model = write_scene_fixture(root, num_images, seed, feature_dim, TINY)
    return root / "ve", regions, model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_snli_ve_fixture(tmp_path_factory.mktemp("snli_ve"), 100, 2)


def _cfg(ve, regions, model, out, **over):
    from trainer.tasks.snli_ve.run import SNLIVEConfig

    base = dict(snli_ve=str(ve), regions=str(regions), out=str(out), model_config=str(model), steps=250, batch_size=32, lr=2e-3,
                head_dropout=0.0, cpu_threads=1, progress=False)
    return SNLIVEConfig(**{**base, **over})


def test_tiny_finetune_beats_the_majority_class_and_is_deterministic(data, tmp_path):
    from trainer.tasks.snli_ve.run import run_snli_ve

    a = run_snli_ve(_cfg(*data, tmp_path / "a"))
    acc, base = a["accuracy"], a["baselines"]["majority_class"]
    assert set(acc["per_class"]) == set(LABELS) and acc["n"] == base["n"] > 30
    assert acc["accuracy"] > base["accuracy"] + 15, f"{acc} vs majority {base}"
    b = run_snli_ve(_cfg(*data, tmp_path / "b"))
    assert b["losses"] == a["losses"] and b["accuracy"] == a["accuracy"]
    assert (tmp_path / "a" / "predictions.json").read_text() == (tmp_path / "b" / "predictions.json").read_text()


def test_user_mistakes_are_one_line_exit_2(data, tmp_path, capsys):
    import shutil

    from trainer.tasks.snli_ve.run import main

    ve, regions, model = data

    def line(*argv) -> str:
        with pytest.raises(SystemExit) as e:
            main(["--regions", str(regions), "--out", str(tmp_path / "o"), "--model-config", str(model), "--steps", "1",
                  "--cpu-threads", "1", "--no-progress", *argv])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("error: ")]
        assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    assert "snli_ve_train.jsonl: no such file" in line("--snli-ve", str(tmp_path / "nowhere"))
    shutil.copytree(ve, tmp_path / "ve")
    dev = tmp_path / "ve" / "snli_ve_dev.jsonl"
    recs = [json.loads(x) for x in dev.read_text().splitlines()]
    recs[1]["Flickr30K_ID"] = "999999"
    dev.write_text("".join(json.dumps(r) + "\n" for r in recs))
    msg = line("--snli-ve", str(tmp_path / "ve"))
    assert f"pairID {recs[1]['pairID']}: field 'Flickr30K_ID' '999999' has no region sample (joined by stem)" in msg
    recs[1]["gold_label"] = "-"
    dev.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert f"snli_ve_dev.jsonl:2: pairID {recs[1]['pairID']}: field 'gold_label' '-' is not one of" in line("--snli-ve", str(tmp_path / "ve"))
