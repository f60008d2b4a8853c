"""The trainer's console in a log file: no transformers chatter (load report, weight-loading bar) and no
progress-bar redraws unless asked for (``--verbose true`` brings transformers' lines back)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import parse_args
from trainer_fixtures import write_corpus

ROOT = Path(__file__).parents[1]
TINY = ["--steps", "1", "--batch-size", "2", "--num-workers", "0", "--log-every", "1", "--ckpt-every", "1000", "--max-text-len", "16",
        "--v-hidden-size", "32", "--v-layers", "1", "--co-layers", "1", "--text-init", "minilm", "--device", "cpu", "--cpu-threads", "1"]


def _train(tmp_path: Path, name: str, *extra: str) -> str:
    regions, labels = write_corpus(tmp_path / "data", num_images=4, num_shards=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):  # the trainer must quiet them itself
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--regions", str(regions), "--labels", str(labels),
                           "--out", str(tmp_path / name), *TINY, *extra],
                          cwd=ROOT, env=env, capture_output=True, timeout=300)  # bytes: text mode would turn '\r' into '\n'
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_piped_console_is_quiet_and_verbose_brings_transformers_back(tmp_path):
    quiet = _train(tmp_path, "quiet")
    assert "LOAD REPORT" not in quiet and "Loading weights" not in quiet
    assert "\r" not in quiet, "a progress bar redrew into a pipe"
    assert "step 1 loss" in quiet  # our own log lines stay
    loud = _train(tmp_path, "loud", "--verbose", "true", "--progress", "true")
    assert "LOAD REPORT" in loud and "Loading weights" in loud
    assert "pretrain" in loud and "\r" in loud  # --progress true forces the bar even into a pipe


def test_progress_is_auto_unless_forced():
    assert parse_args(["--regions", "r", "--labels", "l"]).progress is None
    assert parse_args(["--progress", "auto"]).progress is None
    assert parse_args(["--progress", "false"]).progress is False
    assert parse_args(["--progress", "true", "--verbose", "true"]).verbose is True
