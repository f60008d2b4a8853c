"""VCR fine-tuning on the shared engine (4-way scoring of (context, choice) pairs): deterministic runs, and a tiny model beats
the majority position on Q→A, QA→R and Q→AR of the held-out synthetic val split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.synthetic.vcr import generate_vcr
from task_fixtures import write_scene_fixture

SEED = 3
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "location": "5d", "dropout": 0.0, "max_text_len": 32}


def write_vcr_fixture(root: Path, num_images: int, per_image: int, seed: int = SEED, feature_dim: int = 16) -> tuple[Path, Path, Path]:
    """Synthetic VCR over the corpus's scenes and those scenes' region shard (the corpus's simulated detector)."""
    generate_vcr(root / "vcr", num_images, seed, per_image)
    regions, model = write_scene_fixture(root, num_images, seed, feature_dim, TINY)
    return root / "vcr", regions, model


def _cfg(vcr, regions, model, out, **over):
    from trainer.tasks.vcr.run import VCRConfig

    base = dict(vcr=str(vcr), regions=str(regions), out=str(out), model_config=str(model), steps=1500, batch_size=16, lr=1e-3,
                head_dropout=0.0, cpu_threads=1, progress=False)
    return VCRConfig(**{**base, **over})


def test_same_seed_same_predictions(tmp_path):
    from trainer.tasks.vcr.run import run_vcr

    data = write_vcr_fixture(tmp_path, 30, 2)
    a = run_vcr(_cfg(*data, tmp_path / "a", steps=20))
    b = run_vcr(_cfg(*data, tmp_path / "b", steps=20))
    assert b["losses"] == a["losses"] and b["accuracy"] == a["accuracy"] and a["join_key"] == "stem"
    assert a["links"] is True and a["objects_matched_to_regions"] > 0.9  # the simulated detector's boxes cover the scene objects
    assert (tmp_path / "a" / "predictions.json").read_text() == (tmp_path / "b" / "predictions.json").read_text()
    preds = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert len(preds) == a["accuracy"]["n"] and all(set(p) == {"answer", "rationale"} for p in preds.values())


@pytest.mark.slow
def test_tiny_finetune_beats_the_majority_position(tmp_path):
    """300 synthetic images (4 questions each), 1-layer 32-wide model from scratch, 1,500 steps, object references as
    linked-region words (the default): held-out val."""
    from trainer.tasks.vcr.run import run_vcr

    res = run_vcr(_cfg(*write_vcr_fixture(tmp_path, 300, 4), tmp_path / "o"))
    acc, base = res["accuracy"], res["baselines"]["majority_position"]
    assert res["links"] is True
    assert acc["n"] == base["n"] > 100
    for k in ("q2a", "qa2r", "q2ar"):
        assert acc[k] > base[k] + 5, f"{k}: {acc} vs majority {base}"
