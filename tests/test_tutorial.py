"""The README's own-data commands, run exactly as written from a clean directory: an LXMERT TSV plus
captions → region shards → label shards (tag_similarity on LXMERT's detected classes) → a few trainer
steps. The input files come from the synthetic generator, which writes the real layouts."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- own-data-commands.*?-->\s*```bash\n(.*?)```\s*<!-- /own-data-commands -->", text, re.S)
    assert block, "README lost its own-data command block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_readme_own_data_commands_work_from_a_clean_directory(tmp_path):
    _run([sys.executable, "-m", "pipelines.synthetic", "--out", "my", "--num-images", "16", "--feature-dim", "16"], tmp_path)
    commands = readme_commands()
    assert [c.split()[2] for c in commands] == ["pipelines.regions", "pipelines.label_pipeline", "trainer.train"]
    for cmd in commands:
        argv = [sys.executable if a == "python" else a for a in shlex.split(cmd)]
        if argv[2] == "trainer.train":  # a few steps, not a pre-training run
            argv += ["--steps", "3", "--batch-size", "4", "--num-workers", "0", "--log-every", "1"]
        _run(argv, tmp_path)
    regions = json.loads((tmp_path / "data/regions/_MANIFEST.json").read_text())
    assert regions["counts"] == {"in": 16, "out": 16, "rejected": 0} and regions["has_cls_prob"] is True
    labels_dir = tmp_path / "data/labels" / (tmp_path / "data/labels/CURRENT").read_text().strip()
    labels = json.loads((labels_dir / "_MANIFEST.json").read_text())
    stats = labels["stats"]
    assert labels["counts"]["out"] == 32 and stats["positive_pairs"] > 0  # LXMERT's classes gave tag_similarity something
    losses = [json.loads(line) for line in (tmp_path / "runs/pretrain/losses.jsonl").read_text().splitlines()]
    assert losses and all(v == v for v in losses[-1].values() if isinstance(v, float))


def test_label_cli_user_mistake_is_one_line_and_nonzero(tmp_path):
    """Plain BUTD regions + tag_similarity: one line saying what to run instead, no traceback."""
    _run([sys.executable, "-m", "pipelines.synthetic", "--out", "my", "--num-images", "4", "--feature-dim", "8"], tmp_path)
    _run([sys.executable, "-m", "pipelines.regions", "--tsv", "my/regions.tsv", "--out", "data/regions", "--num-shards", "1"], tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "pipelines.label_pipeline", "--captions", "my/captions.tsv", "--regions", "data/regions",
                        "--out", "data", "--objects-vocab", "my/objects_vocab.txt"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no detector classes" in r.stderr and "--lxmert" in r.stderr and "grounding_dino" in r.stderr
