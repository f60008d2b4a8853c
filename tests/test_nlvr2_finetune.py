"""NLVR2 fine-tuning on the shared engine (pair setup): a tiny model beats the majority label on the
held-out synthetic dev split, runs are deterministic, and bad input is one clear line."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.synthetic.nlvr2 import generate_nlvr2
from task_fixtures import write_scene_fixture

SEED = 3
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "location": "5d", "dropout": 0.0, "max_text_len": 24}


def write_nlvr2_fixture(root: Path, num_images: int, per_set: int, seed: int = SEED, feature_dim: int = 16) -> tuple[Path, Path, Path]:
    """Synthetic NLVR2 (with its images.tsv id map) over the corpus's scenes and those scenes' region shard."""
    generate_nlvr2(root / "nlvr2", num_images, seed, per_set)
    regions, model = write_scene_fixture(root, num_images, seed, feature_dim, TINY)
    return root / "nlvr2", regions, model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_nlvr2_fixture(tmp_path_factory.mktemp("nlvr2"), 200, 4)


def _cfg(nlvr2, regions, model, out, **over):
    from trainer.tasks.nlvr2.run import NLVR2Config

    base = dict(nlvr2=str(nlvr2), regions=str(regions), out=str(out), model_config=str(model), id_map=str(nlvr2 / "images.tsv"),
                image_id="map", steps=250, batch_size=16, lr=2e-3, head_dropout=0.0, cpu_threads=1, progress=False)
    return NLVR2Config(**{**base, **over})


def test_tiny_finetune_beats_the_majority_label_and_is_deterministic(data, tmp_path):
    from trainer.tasks.nlvr2.run import run_nlvr2

    a = run_nlvr2(_cfg(*data, tmp_path / "a"))
    acc, base = a["accuracy"], a["baselines"]["majority_label"]
    assert acc["n"] == base["n"] > 30 and a["join_key"] == "map"
    assert acc["accuracy"] > base["accuracy"] + 5, f"{acc} vs majority {base}"
    b = run_nlvr2(_cfg(*data, tmp_path / "b"))
    assert b["losses"] == a["losses"] and b["accuracy"] == a["accuracy"]
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()


def test_user_mistakes_are_one_line_exit_2(data, tmp_path, capsys):
    import shutil

    from trainer.tasks.nlvr2.run import main

    nlvr2, regions, model = data

    def line(*argv) -> str:
        with pytest.raises(SystemExit) as e:
            main(["--regions", str(regions), "--out", str(tmp_path / "o"), "--model-config", str(model), "--steps", "1",
                  "--cpu-threads", "1", "--no-progress", *argv])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("error: ")]
        assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    assert "train.json: no such file" in line("--nlvr2", str(tmp_path / "nowhere"))
    assert "no NLVR2 image joins a region sample" in line("--nlvr2", str(nlvr2), "--image-id", "stem")  # needs its images.tsv
    shutil.copytree(nlvr2, tmp_path / "n")
    tsv = tmp_path / "n" / "images.tsv"
    rows = tsv.read_text().splitlines()
    dropped = next(r for r in rows if r.startswith("dev-")).split("\t")[0]
    tsv.write_text("".join(r + "\n" for r in rows if not r.startswith(dropped + "\t")))
    msg = line("--nlvr2", str(tmp_path / "n"), "--id-map", str(tsv))
    assert "dev.json: identifier dev-" in msg and f"image {dropped} has no region sample (joined by map)" in msg
